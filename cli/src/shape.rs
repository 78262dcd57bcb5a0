//! Strict parsing of `--shape` and `--mode`: a plain `N[,N...]` of decimal lengths, or `()`
//! for a 0-d array; anything else is an error that names the offending token.

/// How to write a shape, appended to every shape error.
const SHAPE_HINT: &str = "write one length per axis, in decimal digits, separated by commas \
                          and no spaces, e.g. --shape 1000,3 (or --shape '()' for a 0-d array)";

/// Parses `--shape`: `N[,N...]` where each `N` is a non-empty run of ASCII digits, or exactly
/// `()` for a 0-d array (numpy's shape of a scalar). Signs, spaces, empty entries (`3,,4`,
/// `,`, `3,`), other separators (`3x4`) and an empty string are errors naming the token.
pub fn parse_shape(text: &str) -> Result<Vec<usize>, String> {
    if text == "()" {
        return Ok(Vec::new());
    }
    if text.is_empty() {
        return Err(format!("the shape is empty: {SHAPE_HINT}"));
    }
    let mut shape = Vec::new();
    for (i, entry) in text.split(',').enumerate() {
        let axis = i + 1;
        if entry.is_empty() {
            return Err(format!(
                "axis {axis} of {text:?} is empty (a comma at the start or end, or two in a \
                 row): {SHAPE_HINT}"
            ));
        }
        if !entry.bytes().all(|b| b.is_ascii_digit()) {
            let why = match entry.as_bytes()[0] {
                b'-' => "a length cannot be negative",
                b'+' => "a length takes no sign",
                _ => "it is not a length",
            };
            return Err(format!(
                "{entry:?} (axis {axis} of {text:?}): {why}; {SHAPE_HINT}"
            ));
        }
        let n = entry.parse::<usize>().map_err(|_| {
            format!(
                "{entry:?} (axis {axis} of {text:?}) is larger than any length this machine \
                 can hold ({})",
                usize::MAX
            )
        })?;
        shape.push(n);
    }
    Ok(shape)
}

/// Parses `--mode`: octal permission bits such as `600`, `0600` or `0o600`, at most `7777`.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text
        .strip_prefix("0o")
        .or_else(|| text.strip_prefix("0O"))
        .unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!(
            "{text:?} is not an octal permission mode: use digits 0-7, e.g. 600 or 644"
        ));
    }
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err(format!(
            "{text:?} is not a permission mode: at most 7777 (octal)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_comma_separated_lengths_are_accepted() {
        assert_eq!(parse_shape("1000,3"), Ok(vec![1000, 3]));
        assert_eq!(parse_shape("7"), Ok(vec![7]));
        assert_eq!(parse_shape("0,5"), Ok(vec![0, 5]));
        assert_eq!(parse_shape("007"), Ok(vec![7]));
        assert_eq!(parse_shape("()"), Ok(vec![]));
    }

    #[test]
    fn every_malformed_shape_is_refused_naming_its_token() {
        for (text, token) in [
            ("3,,4", "axis 2 of \"3,,4\" is empty"),
            (",", "axis 1 of \",\" is empty"),
            (",,,", "axis 1 of \",,,\" is empty"),
            ("3,", "axis 2 of \"3,\" is empty"),
            ("+3", "\"+3\" (axis 1 of \"+3\"): a length takes no sign"),
            (
                "-1",
                "\"-1\" (axis 1 of \"-1\"): a length cannot be negative",
            ),
            ("3x4", "\"3x4\" (axis 1 of \"3x4\"): it is not a length"),
            ("3, 4", "\" 4\" (axis 2 of \"3, 4\")"),
            ("(3,4)", "\"(3\""),
            ("", "the shape is empty"),
            ("99999999999999999999999", "larger than any length"),
        ] {
            let err = parse_shape(text).unwrap_err();
            assert!(err.contains(token), "{text:?}: {err}");
        }
    }

    #[test]
    fn modes_are_octal_and_at_most_7777() {
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert_eq!(parse_mode("0644"), Ok(0o644));
        assert_eq!(parse_mode("0o640"), Ok(0o640));
        for bad in ["", "8", "0o", "rw", "17777", "-600"] {
            assert!(parse_mode(bad).is_err(), "{bad:?}");
        }
    }
}

//! The optional progress bar of a job (chunks done / total, on stderr), with the
//! `progress` feature.

/// The optional progress bar of a job.
pub(super) struct Progress {
    #[cfg(feature = "progress")]
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    pub(super) fn new(on: bool, n: usize) -> Progress {
        #[cfg(feature = "progress")]
        {
            let bar = (on && n > 1).then(|| {
                let bar = indicatif::ProgressBar::new(n as u64);
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} chunks {elapsed_precise} eta {eta}",
                ) {
                    bar.set_style(style);
                }
                bar
            });
            Progress { bar }
        }
        #[cfg(not(feature = "progress"))]
        {
            let _ = (on, n);
            Progress {}
        }
    }

    pub(super) fn set(&self, _done: u32) {
        #[cfg(feature = "progress")]
        if let Some(bar) = &self.bar {
            bar.set_position(u64::from(_done));
        }
    }

    pub(super) fn finish(&self) {
        #[cfg(feature = "progress")]
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

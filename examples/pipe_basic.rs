//! Seed: "Basic Pipe" — a sender sends a string and a list; a receiver prints them:
//! `Received: Hello from sender!` and `Received: [1, 2, 3]`.

use ndshm::write_stdout;

fn main() -> ndshm::Result<()> {
    let (parent_conn, child_conn) = ndshm::pipe()?;
    ndshm::scope(|s| {
        s.spawn(|| -> ndshm::Result<()> {
            child_conn.send_str("Hello from sender!")?;
            child_conn.send_slice(&[1i64, 2, 3])?;
            child_conn.close();
            Ok(())
        })?;
        s.spawn(|| -> ndshm::Result<()> {
            let msg1 = parent_conn.recv_string()?;
            let msg2: Vec<i64> = parent_conn.recv_vec()?;
            write_stdout(&format!("Received: {msg1}\nReceived: {msg2:?}\n"))?;
            Ok(())
        })?;
        Ok(())
    })
}

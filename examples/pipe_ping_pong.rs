//! Seed: "Bidirectional Pipe" — main and a worker exchange three messages each way:
//! prints `Worker received: Main message i` and `Main received: Worker reply i`.

use ndshm::{write_stdout, Connection};

fn ping_pong(conn: &Connection, name: &str) -> ndshm::Result<()> {
    for i in 0..3 {
        let msg = conn.recv_string()?;
        write_stdout(&format!("{name} received: {msg}\n"))?;
        conn.send_str(&format!("{name} reply {i}"))?;
    }
    conn.close();
    Ok(())
}

fn main() -> ndshm::Result<()> {
    let (conn1, conn2) = ndshm::pipe()?;
    ndshm::scope(|s| {
        s.spawn(|| ping_pong(&conn2, "Worker"))?;
        for i in 0..3 {
            conn1.send_str(&format!("Main message {i}"))?;
            let reply = conn1.recv_string()?;
            write_stdout(&format!("Main received: {reply}\n"))?;
        }
        Ok(())
    })
}

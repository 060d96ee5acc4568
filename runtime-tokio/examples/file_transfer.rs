//! A file transfer over a tunnel between two nodes: node 1 runs a file
//! server (a member of the `files` group that accepts tunnels); node 0
//! opens a tunnel, sends a header as one tunnel message, then the file's
//! bytes with `tokio::io::copy` through the tunnel's byte stream
//! (`Tunnel::into_io`). The server writes what it reads to a file of its
//! own; the two files are compared and the rate printed. Ends by itself.
//!
//! ```sh
//! cargo run -p reign-tokio --example file_transfer            # 16 MiB
//! cargo run -p reign-tokio --example file_transfer -- 100      # 100 MiB
//! ```

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reign_tokio::{Mailbox, Node};
use tokio::io::AsyncWriteExt;

/// What the client says before the bytes: the file's name and length.
#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    name: String,
    len: u64,
}

/// How long to wait for a tunnel to open or for the header.
const WAIT: Duration = Duration::from_secs(10);
/// The default size, in MiB.
const DEFAULT_MIB: u64 = 16;

/// Accepts one transfer: the header, then bytes until the client closes;
/// returns the file written.
async fn serve_one(node: Node, mailbox: Mailbox, dir: PathBuf) -> Result<PathBuf, String> {
    let incoming = mailbox.recv_tunnel().await.map_err(|e| e.to_string())?;
    let tunnel = node.accept_tunnel(incoming).map_err(|e| e.to_string())?;
    let header = tunnel.recv(WAIT).await.map_err(|e| e.to_string())?;
    let header: Header = serde_json::from_slice(&header).map_err(|e| e.to_string())?;
    // Only a file name, never a path: the client does not choose where.
    let name = Path::new(&header.name)
        .file_name()
        .ok_or("a header without a file name")?;
    let path = dir.join(name);
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| e.to_string())?;
    let mut bytes = tunnel.into_io();
    let copied = tokio::io::copy(&mut bytes, &mut file)
        .await
        .map_err(|e| e.to_string())?;
    file.flush().await.map_err(|e| e.to_string())?;
    if copied != header.len {
        return Err(format!(
            "{copied} bytes arrived, the header said {}",
            header.len
        ));
    }
    Ok(path)
}

async fn run(mib: u64) -> Result<(), Box<dyn std::error::Error>> {
    let nodes = common::cluster(2).await;
    let (client, server) = (&nodes[0], &nodes[1]);
    let dir = tempfile::tempdir()?;
    let (outgoing, incoming) = (dir.path().join("out"), dir.path().join("in"));
    std::fs::create_dir_all(&outgoing)?;
    std::fs::create_dir_all(&incoming)?;

    // A file to send, with bytes that show any loss or reordering.
    let source = outgoing.join("payload.bin");
    let len = mib << 20;
    let data: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&source, &data)?;

    let (member, offers) = server.new_mailbox();
    server.join("files", &member)?;
    server.sync().await;
    let receiver = tokio::spawn(serve_one(server.clone(), offers, incoming));

    let started = Instant::now();
    let tunnel = client.tunnel("files", WAIT).await?;
    let header = Header {
        name: "payload.bin".into(),
        len,
    };
    tunnel.send(serde_json::to_vec(&header)?, WAIT).await?;
    let mut bytes = tunnel.into_io();
    let mut file = tokio::fs::File::open(&source).await?;
    let sent = tokio::io::copy(&mut file, &mut bytes).await?;
    // The end of the stream for the server: every byte before it arrives.
    bytes.shutdown().await?;
    let written = receiver.await?.map_err(|e| format!("the server: {e}"))?;
    let elapsed = started.elapsed();

    let received = std::fs::read(&written)?;
    assert_eq!(sent, len);
    assert!(
        received == data,
        "the received file differs from the sent one"
    );
    println!(
        "sent {} ({mib} MiB) from node 0 to node 1 over a tunnel in {elapsed:.2?}: {:.1} MiB/s",
        header.name,
        mib as f64 / elapsed.as_secs_f64()
    );
    for node in &nodes {
        node.shutdown().await;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib = std::env::args()
        .nth(1)
        .map(|s| s.parse::<u64>())
        .transpose()?
        .unwrap_or(DEFAULT_MIB);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(mib))
}

#[test]
fn the_example_runs() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(run(4)).expect("the file transfer example");
}

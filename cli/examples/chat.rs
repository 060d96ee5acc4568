//! Two-node chat, like Go reign's chat sample.
//!
//! Each node registers `chatter_<id>`, reads lines from standard input,
//! looks the other chatter up and sends it each line. When one side quits
//! (end of input, Ctrl-C, or its process dies), the other is told by a close
//! notification and says so.
//!
//! ```sh
//! cargo run -p reign-cli -- init --dir chat --nodes 0-1
//! cargo run -p reign-cli --example chat -- chat/cluster.json 0   # one terminal
//! cargo run -p reign-cli --example chat -- chat/cluster.json 1   # another
//! ```

use std::time::Duration;

use reign_tokio::{ClusterSpec, MailboxClosed, Node, NodeId};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Line {
    from: u16,
    text: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(spec), Some(id)) = (args.next(), args.next()) else {
        eprintln!("usage: chat <cluster.json> <node id 0|1>");
        std::process::exit(2);
    };
    let me: u16 = id.parse()?;
    let other = 1 - me.min(1);
    reign_tokio::register_type_named::<Line>("chat.Line")?;

    let spec = ClusterSpec::load(spec)?;
    let node = Node::start(&spec, NodeId(me)).await?;
    let (inbox_addr, inbox) = node.new_mailbox();
    node.register(&format!("chatter_{me}"), &inbox_addr)?;

    // Wait for the other chatter to appear, then watch it.
    let peer = loop {
        if let Some(peer) = node.lookup(&format!("chatter_{other}")) {
            break peer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    peer.on_close_notify(&inbox_addr);
    println!("connected to chatter_{other}; type lines to send them");

    // Standard input is blocking: read it on its own thread.
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(text) => peer.send(Line { from: me, text })?,
                None => break, // end of input: leave
            },
            msg = inbox.recv() => {
                let Ok(msg) = msg else { break };
                if msg.is::<MailboxClosed>() {
                    println!("chatter_{other} left");
                    break;
                }
                if let Ok(line) = msg.downcast::<Line>() {
                    println!("chatter_{}: {}", line.from, line.text);
                }
            }
        }
    }
    node.shutdown().await;
    Ok(())
}

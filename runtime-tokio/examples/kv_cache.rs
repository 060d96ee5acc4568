//! A distributed key-value cache on three nodes: each node runs one shard,
//! a task registered under the cluster-wide name `kv.shard.<i>`; a key
//! belongs to the shard its hash picks, found through the registry, and is
//! read and written with typed request/reply. Every node writes keys, every
//! node reads them all back; then a shard is stopped and its keys report
//! their shard gone while the others still answer. Ends by itself.
//!
//! ```sh
//! cargo run -p reign-tokio --example kv_cache
//! ```

mod common;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use reign_tokio::{Address, Call, Mailbox, Node, RequestError};

/// Stores a value; replies with the value it replaced.
#[derive(serde::Serialize, serde::Deserialize)]
struct Put {
    key: String,
    value: String,
}

impl Call for Put {
    type Reply = Option<String>;
}

/// Reads a value.
#[derive(serde::Serialize, serde::Deserialize)]
struct Get {
    key: String,
}

impl Call for Get {
    type Reply = Option<String>;
}

/// Nodes, and so shards.
const SHARDS: u16 = 3;
/// Keys each node writes.
const KEYS_PER_NODE: usize = 10;
/// A request's timeout.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The shard's task: a map, and a loop answering `Put` and `Get`.
async fn shard(mailbox: Mailbox) {
    let mut map: HashMap<String, String> = HashMap::new();
    while let Ok(request) = mailbox.recv_request().await {
        let request = match request.into_call::<Put>() {
            Ok((put, reply)) => {
                if let Err(e) = reply.reply(map.insert(put.key, put.value)) {
                    eprintln!("a reply was not sent: {e}");
                }
                continue;
            }
            Err(request) => request,
        };
        match request.into_call::<Get>() {
            Ok((get, reply)) => {
                if let Err(e) = reply.reply(map.get(&get.key).cloned()) {
                    eprintln!("a reply was not sent: {e}");
                }
            }
            Err(other) => {
                let _ = other.reply_error("a kv shard answers Put and Get only");
            }
        }
    }
}

/// The shard a key belongs to.
fn shard_of(key: &str) -> u16 {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % u64::from(SHARDS)) as u16
}

/// The address of a key's shard, as this node's registry knows it.
fn shard_for(node: &Node, key: &str) -> Result<Address, RequestError> {
    node.lookup(&format!("kv.shard.{}", shard_of(key)))
        .ok_or(RequestError::NoMember)
}

async fn put(node: &Node, key: &str, value: &str) -> Result<Option<String>, RequestError> {
    let put = Put {
        key: key.into(),
        value: value.into(),
    };
    node.call(&shard_for(node, key)?, put, TIMEOUT).await
}

async fn get(node: &Node, key: &str) -> Result<Option<String>, RequestError> {
    let get = Get { key: key.into() };
    node.call(&shard_for(node, key)?, get, TIMEOUT).await
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    reign_tokio::register_type_named::<Put>("example.kv.Put")?;
    reign_tokio::register_type_named::<Get>("example.kv.Get")?;
    // The replies' type crosses the wire too.
    reign_tokio::register_type_named::<Option<String>>("example.kv.Value")?;
    let nodes = common::cluster(SHARDS).await;

    let mut shards = Vec::new();
    for node in &nodes {
        let address = node.spawn(shard);
        node.register(&format!("kv.shard.{}", node.id().0), &address)?;
        shards.push(address);
    }
    for node in &nodes {
        node.sync().await;
    }

    // Every node writes its keys...
    for node in &nodes {
        for i in 0..KEYS_PER_NODE {
            let key = format!("node{}-key{i}", node.id().0);
            assert_eq!(put(node, &key, &format!("value {i}")).await?, None);
        }
    }
    // ... and every node reads every key, wherever its shard lives.
    let mut remote_reads = 0;
    for reader in &nodes {
        for writer in &nodes {
            for i in 0..KEYS_PER_NODE {
                let key = format!("node{}-key{i}", writer.id().0);
                assert_eq!(get(reader, &key).await?, Some(format!("value {i}")));
                if shard_of(&key) != reader.id().0 {
                    remote_reads += 1;
                }
            }
        }
    }
    println!(
        "{} keys written, each read from every node ({remote_reads} reads went to another node)",
        KEYS_PER_NODE * nodes.len()
    );
    let replaced = put(&nodes[0], "node1-key0", "new").await?;
    assert_eq!(replaced.as_deref(), Some("value 0"));

    // Stop shard 2: its name vanishes everywhere, its keys fail clearly,
    // the other shards keep answering.
    shards[2].kill()?;
    while nodes.iter().any(|n| n.lookup("kv.shard.2").is_some()) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut lost, mut kept) = (0, 0);
    for i in 0..KEYS_PER_NODE {
        let key = format!("node0-key{i}");
        match get(&nodes[0], &key).await {
            Err(RequestError::NoMember) => lost += 1,
            Ok(Some(_)) => kept += 1,
            other => return Err(format!("{key}: {other:?}").into()),
        }
    }
    println!("after shard 2 stopped: {kept} keys of node 0 still answer, {lost} are gone with it");
    assert_eq!(kept + lost, KEYS_PER_NODE);

    for node in &nodes {
        node.shutdown().await;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run())
}

#[test]
fn the_example_runs() {
    main().expect("the key-value cache example");
}

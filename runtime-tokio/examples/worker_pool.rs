//! A supervised worker pool across two nodes: node 1 runs a supervisor with
//! four workers, each a member of the `squares` group; node 0 sends them
//! jobs with typed calls, load balanced over the members. A job marked
//! poisoned makes its worker fail; the supervisor restarts it, the caller
//! sees the request abandoned and sends it again. Ends by itself.
//!
//! ```sh
//! cargo run -p reign-tokio --example worker_pool
//! ```

mod common;

use std::time::Duration;

use reign_tokio::{
    Call, ChildSpec, Node, Request, RequestError, Shutdown, Strategy, SupervisorSpec,
};

/// A job: square `n`. A poisoned job fails the worker that takes it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Square {
    n: u64,
    poisoned: bool,
}

impl Call for Square {
    type Reply = u64;
}

/// Workers in the pool.
const WORKERS: usize = 4;
/// Jobs the client sends.
const JOBS: u64 = 20;
/// How long a call may take before the client gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per job: a poisoned job fails once, then goes through.
const ATTEMPTS: usize = 20;

/// One worker: joins the group, then answers jobs until told to stop.
async fn worker(node: Node, mailbox: reign_tokio::Mailbox) -> Result<(), String> {
    node.join("squares", &mailbox.address())
        .map_err(|e| e.to_string())?;
    loop {
        let msg = mailbox.recv().await.map_err(|e| e.to_string())?;
        let request = match msg.take::<Request>() {
            Ok(request) => request,
            // The supervisor's stop: leave cleanly.
            Err(msg) if msg.is::<Shutdown>() => return Ok(()),
            Err(_) => continue,
        };
        let Ok((job, reply)) = request.into_call::<Square>() else {
            continue;
        };
        if job.poisoned {
            // Dropping the request answers the caller `Abandoned`; the
            // error is this worker's exit reason, which the supervisor sees.
            return Err(format!("poisoned job {}", job.n));
        }
        let _ = reply.reply(job.n * job.n);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    reign_tokio::register_type_named::<Square>("example.pool.Square")?;
    let nodes = common::cluster(2).await;
    let (client, server) = (&nodes[0], &nodes[1]);

    let mut spec = SupervisorSpec::new(Strategy::OneForOne).intensity(10, Duration::from_secs(10));
    for i in 0..WORKERS {
        let node = server.clone();
        spec = spec.child(ChildSpec::worker(format!("worker-{i}"), move |mailbox| {
            worker(node.clone(), mailbox)
        }));
    }
    let pool = server.supervise("pool", spec);

    // Wait until node 0 sees every worker in the group.
    while client.members("squares").len() < WORKERS {
        server.sync().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut total = 0;
    for n in 1..=JOBS {
        let mut poisoned = n % 7 == 0;
        let mut attempt = 0;
        let squared = loop {
            attempt += 1;
            match client
                .call("squares", Square { n, poisoned }, CALL_TIMEOUT)
                .await
            {
                Ok(squared) => break squared,
                // The worker died with the job (or had just died): again,
                // this time not poisoned.
                Err(RequestError::Abandoned | RequestError::NoMember) if attempt < ATTEMPTS => {
                    println!("job {n}: attempt {attempt} failed, sending it again");
                    poisoned = false;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(format!("job {n}: {e}").into()),
            }
        };
        assert_eq!(squared, n * n);
        total += squared;
    }
    println!("sum of the squares of 1..={JOBS}: {total}");
    assert_eq!(total, (1..=JOBS).map(|n| n * n).sum::<u64>());

    for child in pool.which_children() {
        println!(
            "{}: {:?}, restarted {} time(s)",
            child.name, child.state, child.restarts
        );
    }
    let restarts = pool.restarts();
    println!("{restarts} restart(s) in all");
    assert!(restarts >= JOBS / 7, "every poisoned job cost a worker");

    pool.shutdown();
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
    main().expect("the worker pool example");
}

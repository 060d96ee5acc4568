//! A fault-injection TCP proxy on 127.0.0.1, to partition two real nodes
//! without touching them: point one node's spec `address` at the proxy and
//! its `listen_address` at the real port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Pass everything through.
    Forward = 0,
    /// Keep connections open but drop every byte, both ways: a silent
    /// partition that only pings and deadlines can detect.
    Blackhole = 1,
    /// Refuse new connections (an unreachable host).
    Refuse = 2,
}

/// A running proxy. Dropping it stops it and closes every connection.
pub struct FaultProxy {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on an ephemeral port of 127.0.0.1 forwarding to `target`.
    /// Must be called inside a tokio runtime.
    pub async fn start(target: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mode = Arc::new(AtomicU8::new(Mode::Forward as u8));
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::new(Mutex::new(Vec::new()));
        let (m, t) = (mode.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if m.load(Ordering::Relaxed) == Mode::Refuse as u8 {
                    drop(inbound);
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let (ir, iw) = inbound.into_split();
                let (or, ow) = outbound.into_split();
                let mut tasks = t.lock().unwrap_or_else(|e| e.into_inner());
                tasks.push(tokio::spawn(pump(ir, ow, m.clone())));
                tasks.push(tokio::spawn(pump(or, iw, m.clone())));
            }
        });
        Ok(FaultProxy {
            addr,
            mode,
            tasks,
            accept,
        })
    }

    /// Where nodes should dial.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes what the proxy does from now on.
    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::Relaxed);
    }

    /// Closes every proxied connection (both ends see a reset or EOF).
    pub fn cut(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: Arc<AtomicU8>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let forward = mode.load(Ordering::Relaxed) == Mode::Forward as u8;
        // Anything else is dropped on the floor.
        if forward && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

//! A connection flood for the lock-out tests (issue 14, §2), run as its own process at the lowest
//! CPU priority, as if from another machine: on the test machine's two cores, a flood inside the
//! test process took a core from the node it attacked and measured the test, not the node.
//!
//! `avsnode-flood TARGET SOURCE SOCKETS [HEX]` holds SOCKETS TCP connections from the address
//! SOURCE to TARGET, each sending the bytes HEX once and then nothing; a connection the node
//! closes is opened again at once. Every 100 ms it prints `connected closed failed` (totals). It
//! stops when its standard input closes.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpSocket;

#[derive(Default)]
struct Counts {
    connected: AtomicU64,
    closed: AtomicU64,
    failed: AtomicU64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: avsnode-flood TARGET SOURCE SOCKETS [HEX]";
    let target: SocketAddr = args.get(1).expect(usage).parse().expect(usage);
    let source: IpAddr = args.get(2).expect(usage).parse().expect(usage);
    let sockets: usize = args.get(3).expect(usage).parse().expect(usage);
    let bytes: &'static [u8] = Box::leak(
        (0..args.get(4).map_or(0, String::len) / 2)
            .map(|i| u8::from_str_radix(&args[4][2 * i..2 * i + 2], 16).expect(usage))
            .collect::<Vec<u8>>()
            .into_boxed_slice(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Standard input closing (the test dropped its end) ends the flood.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let counts = Arc::new(Counts::default());
    runtime.block_on(async {
        for _ in 0..sockets {
            tokio::spawn(hold(target, source, bytes, counts.clone()));
        }
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            println!(
                "{} {} {}",
                counts.connected.load(Ordering::Relaxed),
                counts.closed.load(Ordering::Relaxed),
                counts.failed.load(Ordering::Relaxed)
            );
        }
    });
}

/// One connection, made again each time the node closes it.
async fn hold(target: SocketAddr, source: IpAddr, bytes: &'static [u8], counts: Arc<Counts>) {
    loop {
        let held = async {
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(source, 0))?;
            let mut stream = socket.connect(target).await?;
            counts.connected.fetch_add(1, Ordering::Relaxed);
            stream.write_all(bytes).await?;
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        };
        match held.await {
            Ok(()) => counts.closed.fetch_add(1, Ordering::Relaxed),
            // Reset by the node (a refused connection), or no connection at all.
            Err(_) => counts.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

//! The writer half of a connection: a task that writes the session's
//! queued lines in order and keeps the byte counts the queue bounds read.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::{ClientGuard, LINGER};

/// The writer half: lines out in order, flushed when the queue is empty.
/// `abort` firing drops the rest at once (a client over its queue bound);
/// its sender dropped means the session ended, and what is queued then
/// gets [`LINGER`] to be written before the socket is closed regardless.
pub(super) struct Writer {
    pub(super) rx: mpsc::UnboundedReceiver<Vec<u8>>,
    pub(super) abort: oneshot::Receiver<()>,
    pub(super) queued: Arc<AtomicUsize>,
    /// The uid's share (read-only clients only), counted down alike.
    pub(super) uid_share: Option<Arc<super::limits::UidShare>>,
    /// Released when the writer ends, with the socket.
    pub(super) guard: Option<ClientGuard>,
}

/// Each connection's write buffer: several replies or events queued
/// together go out in one write. Replies are a few hundred bytes, so
/// 2 KiB batches them nearly as well as tokio's default 8 KiB, which was
/// most of an idle client's cost (issue 19, docs/footprint.md); a longer
/// line is written straight through.
const WRITE_BUF_BYTES: usize = 2048;

pub(super) async fn write_lines<W: AsyncWrite + Unpin>(
    w: W,
    wr: Writer,
    unwritten: Arc<AtomicUsize>,
) {
    let Writer { mut rx, abort, queued, uid_share, guard } = wr;
    let written = |n: usize| {
        queued.fetch_sub(n, Ordering::SeqCst);
        if let Some(share) = &uid_share {
            share.queued.fetch_sub(n, Ordering::SeqCst);
        }
        unwritten.fetch_sub(1, Ordering::SeqCst);
    };
    let mut w = tokio::io::BufWriter::with_capacity(WRITE_BUF_BYTES, w);
    let pump = async {
        while let Some(line) = rx.recv().await {
            let res = w.write_all(&line).await;
            let res = match res {
                Ok(()) if rx.is_empty() => w.flush().await,
                other => other,
            };
            written(line.len());
            if res.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    };
    let stop = async {
        if abort.await.is_err() {
            tokio::time::sleep(LINGER).await;
        }
    };
    tokio::select! {
        () = pump => {}
        () = stop => {}
    }
    // Whatever is left will never be written.
    rx.close();
    // Counted as gone all the same: the uid's share outlives this
    // connection.
    while let Some(line) = rx.recv().await {
        written(line.len());
    }
    drop(w);
    drop(guard);
}

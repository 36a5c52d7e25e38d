//! Guest stderr capture: keeps the last few KiB a plugin wrote (a Rust panic
//! message, typically) so a trap can be reported with its cause. Never fails
//! and never grows.

use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

const KEEP: usize = 4096;

#[derive(Clone, Default)]
pub struct TailPipe {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl TailPipe {
    fn push(&self, bytes: &[u8]) {
        let mut buf = self.buf.lock().expect("tail pipe lock");
        buf.extend_from_slice(bytes);
        if buf.len() > KEEP {
            let cut = buf.len() - KEEP;
            buf.drain(..cut);
        }
    }

    /// Takes what was written since the last call.
    pub fn take(&self) -> String {
        let mut buf = self.buf.lock().expect("tail pipe lock");
        let s = String::from_utf8_lossy(&buf).into_owned();
        buf.clear();
        s
    }
}

impl IsTerminal for TailPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for TailPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for TailPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for TailPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(KEEP)
    }
}

impl tokio::io::AsyncWrite for TailPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

//! The TCP stream under the SSH connection.
//!
//! sshd sends non-interactive sessions' packets with Nagle on, so a small reply that follows an
//! unacknowledged small packet waits for our ACK, and Linux delays ACKs by up to 40 ms: every
//! helper round trip paid that. Re-arming TCP_QUICKACK after each read makes the kernel ACK at
//! once (Linux only; elsewhere this is a plain TcpStream).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub struct QuickAckStream(TcpStream);

impl QuickAckStream {
    pub async fn connect(host: &str, port: u16) -> io::Result<QuickAckStream> {
        let stream = TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        let stream = QuickAckStream(stream);
        stream.quick_ack();
        Ok(stream)
    }

    /// A stream a listener accepted (the Runtime and Invoke APIs: clients that send a request's
    /// head and body in separate small writes meet the same delayed ACK).
    pub fn accepted(stream: TcpStream) -> QuickAckStream {
        let _ = stream.set_nodelay(true);
        let stream = QuickAckStream(stream);
        stream.quick_ack();
        stream
    }

    #[cfg(target_os = "linux")]
    fn quick_ack(&self) {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads `on` for the given length on a socket we own.
        unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn quick_ack(&self) {}
}

impl AsyncRead for QuickAckStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.0).poll_read(cx, buf);
        if result.is_ready() {
            self.quick_ack();
        }
        result
    }
}

impl AsyncWrite for QuickAckStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

//! Byte-for-byte relaying between a local stream and an SSH channel, both directions at once,
//! with half-close: the end of one direction is passed on as a shutdown of the other side's
//! write half (an SSH channel EOF), and the other direction goes on until it ends too. The
//! Docker API's hijacked attach/exec streams and BuildKit's h2c sessions depend on that.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Large enough that a `docker save` is not held back by the relay.
const BUFFER: usize = 256 << 10;

pub async fn relay<A, B>(a: A, b: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let up = one_way(&mut a_read, &mut b_write);
    let down = one_way(&mut b_read, &mut a_write);
    tokio::pin!(up, down);
    // Both directions run to their end; a failure in either ends both.
    tokio::select! {
        result = &mut up => if result.is_ok() { let _ = down.await; },
        result = &mut down => if result.is_ok() { let _ = up.await; },
    }
}

/// Copy until EOF, then shut the destination's write half.
async fn one_way<R, W>(from: &mut R, to: &mut W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; BUFFER];
    loop {
        let read = from.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        to.write_all(&buffer[..read]).await?;
        to.flush().await?;
    }
    to.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn half_close_passes_through_and_the_other_way_goes_on() {
        let (client, near) = tokio::io::duplex(1024);
        let (far, server) = tokio::io::duplex(1024);
        let relaying = tokio::spawn(relay(near, far));
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let (mut server_read, mut server_write) = tokio::io::split(server);
        client_write.write_all(b"hi").await.unwrap();
        client_write.shutdown().await.unwrap();
        let mut got = Vec::new();
        server_read.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hi", "the client's EOF reached the server");
        server_write.write_all(b"still here").await.unwrap();
        server_write.shutdown().await.unwrap();
        let mut back = Vec::new();
        client_read.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"still here");
        relaying.await.unwrap();
    }
}

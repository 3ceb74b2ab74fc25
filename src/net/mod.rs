//! The transport seam: the one place a connection's bytes meet the operating system.
//!
//! Owns the socket of a connection and offers what the reactor needs of it: read into a
//! read buffer's spare capacity, vectored writes (as `std::io::Write`), shutdown, and
//! mio registration (`mio::event::Source`). Two arms: plain TCP and TLS (rustls over
//! the same stream, `tls`), so every call stays a `match` (static dispatch, no
//! `Box<dyn>`) on the hot read and flush paths; the TLS session is boxed so the enum
//! stays one pointer wide beside the plain stream.
//!
//! Knows nothing of AMQP, connections or the broker: `conn` holds a `Transport`, the
//! reactor drives it.

pub mod tls;
pub mod x509;

use bytes::BytesMut;
use mio::event::Source;
use mio::{Interest, Registry, Token};
use std::io::{self, IoSlice, Write};

/// The socket under one connection.
#[derive(Debug)]
pub enum Transport {
    /// Plain TCP, non-blocking.
    Tcp(mio::net::TcpStream),
    /// TLS over TCP (AMQPS, HTTPS).
    Tls(Box<tls::TlsStream>),
}

impl Transport {
    /// A freshly accepted TCP connection, with Nagle off: frames are written whole, once
    /// per turn, and a small reply must not wait for the peer's delayed ack.
    pub fn tcp(sock: mio::net::TcpStream) -> Transport {
        let _ = sock.set_nodelay(true);
        Transport::Tcp(sock)
    }

    /// A freshly accepted TCP connection that speaks TLS with `config`.
    pub fn tls(
        sock: mio::net::TcpStream,
        config: std::sync::Arc<rustls::ServerConfig>,
    ) -> io::Result<Transport> {
        let _ = sock.set_nodelay(true);
        Ok(Transport::Tls(Box::new(tls::TlsStream::new(sock, config)?)))
    }

    /// Writes what the transport itself still holds (TLS records the socket did not
    /// take: handshake messages, or the tail of encrypted output). Ok(true) when
    /// nothing is left. Plain TCP holds nothing.
    #[inline]
    pub fn flush_pending(&mut self) -> io::Result<bool> {
        match self {
            Transport::Tcp(_) => Ok(true),
            Transport::Tls(t) => t.flush_pending(),
        }
    }

    /// Whether [`Transport::flush_pending`] has anything to write.
    #[inline]
    pub fn wants_write(&self) -> bool {
        match self {
            Transport::Tcp(_) => false,
            Transport::Tls(t) => t.wants_write(),
        }
    }

    /// The TLS session, if this is one.
    pub fn as_tls(&self) -> Option<&tls::TlsStream> {
        match self {
            Transport::Tcp(_) => None,
            Transport::Tls(t) => Some(t),
        }
    }

    /// One read straight into `buf`'s spare capacity (the caller reserves it), appended
    /// after its current contents. Returns (bytes read, room offered); 0 bytes read with
    /// room offered is end of stream.
    pub fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<(usize, usize)> {
        match self {
            Transport::Tcp(s) => {
                use std::os::fd::AsRawFd;
                read_spare(s.as_raw_fd(), buf)
            }
            Transport::Tls(t) => t.read_into(buf),
        }
    }

    /// The local address of the socket (for a connection's name), if the OS tells it.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Transport::Tcp(s) => s.local_addr().ok(),
            Transport::Tls(t) => t.sock.local_addr().ok(),
        }
    }

    /// Shuts both directions down (errors ignored: the peer may be gone already);
    /// a TLS session first sends close_notify.
    pub fn shutdown(&mut self) {
        match self {
            Transport::Tcp(s) => {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            Transport::Tls(t) => t.shutdown(),
        }
    }
}

/// read(2) on `fd` into `buf`'s spare capacity. Reading into uninitialised capacity
/// saves zeroing every byte before the kernel overwrites it (a fifth of the CPU at 64 KB
/// messages). `std::io::Read` needs an initialised `&mut [u8]`, so this calls read(2) on
/// a raw pointer instead.
fn read_spare(fd: std::os::fd::RawFd, buf: &mut BytesMut) -> io::Result<(usize, usize)> {
    let spare = buf.spare_capacity_mut();
    let want = spare.len();
    // SAFETY: `fd` is an open socket owned by the caller's transport; the pointer and
    // length describe the buffer's spare capacity, which read(2) only writes to.
    let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), want) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = (n as usize).min(want);
    // SAFETY: read(2) initialised exactly `n` bytes right after the current length.
    unsafe { buf.set_len(buf.len() + n) };
    Ok((n, want))
}

/// Vectored writes for `OutBuf::flush_to`.
impl Write for Transport {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.write(b),
            Transport::Tls(t) => t.write_vectored(&[IoSlice::new(b)]),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.write_vectored(bufs),
            Transport::Tls(t) => t.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Registration with the reactor's `mio::Poll`: the inner stream's.
impl Source for Transport {
    fn register(&mut self, r: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.register(r, token, interest),
            Transport::Tls(t) => t.sock.register(r, token, interest),
        }
    }

    fn reregister(&mut self, r: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.reregister(r, token, interest),
            Transport::Tls(t) => t.sock.reregister(r, token, interest),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.deregister(r),
            Transport::Tls(t) => t.sock.deregister(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_append_after_existing_input_and_writes_arrive() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut t = Transport::Tcp(mio::net::TcpStream::from_std(server));
        client.write_all(b"world").unwrap();
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(b"hello ");
        let room = buf.capacity() - buf.len();
        // The stream is blocking (from_std keeps the mode): the read waits for the bytes.
        let (n, offered) = t.read_into(&mut buf).unwrap();
        assert_eq!(n, 5);
        assert_eq!(offered, room);
        assert_eq!(&buf[..], b"hello world");
        let wrote = t
            .write_vectored(&[IoSlice::new(b"a"), IoSlice::new(b"bc")])
            .unwrap();
        assert_eq!(wrote, 3);
        t.shutdown();
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut client, &mut got).unwrap();
        assert_eq!(got, b"abc");
    }
}

//! The block-sync wire format: one length-prefixed frame per request and per response.
//!
//! A frame is `u32 big-endian length ‖ payload`. The length is checked against the cap before
//! a single byte of payload is allocated or read, so a peer cannot make us allocate more than
//! the cap by announcing a large frame.

use std::io;

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response;
use libp2p::StreamProtocol;

/// Length-bounded codec for `/mesh/<chain_id>/sync/2`; payloads are opaque bytes.
#[derive(Debug, Clone)]
pub(crate) struct SyncCodec {
    /// Largest request or response accepted or sent, in bytes.
    pub(crate) frame_bytes_max: usize,
}

/// Frame prefix length in bytes.
const PREFIX_BYTES: usize = 4;

async fn read_frame<T>(io: &mut T, frame_bytes_max: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut prefix = [0u8; PREFIX_BYTES];
    io.read_exact(&mut prefix).await?;
    let len = usize::try_from(u32::from_be_bytes(prefix))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "frame length overflows usize"))?;
    if len > frame_bytes_max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("sync frame of {len} bytes exceeds the cap of {frame_bytes_max}"),
        ));
    }
    let mut payload = vec![0u8; len];
    io.read_exact(&mut payload).await?;
    Ok(payload)
}

async fn write_frame<T>(io: &mut T, payload: &[u8], frame_bytes_max: usize) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    if payload.len() > frame_bytes_max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "sync frame of {} bytes exceeds the cap of {frame_bytes_max}",
                payload.len()
            ),
        ));
    }
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame longer than u32"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(payload).await?;
    io.close().await
}

impl request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.frame_bytes_max).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.frame_bytes_max).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &request, self.frame_bytes_max).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &response, self.frame_bytes_max).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::futures::executor::block_on;
    use libp2p::futures::io::Cursor;

    #[test]
    fn frame_round_trips_and_cap_is_checked_before_reading() {
        let mut buf = Cursor::new(Vec::new());
        block_on(write_frame(&mut buf, b"hello", 16)).unwrap();
        let bytes = buf.into_inner();
        assert_eq!(bytes, [0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o']);
        let got = block_on(read_frame(&mut Cursor::new(bytes.clone()), 16)).unwrap();
        assert_eq!(got, b"hello");
        // Announces 5 bytes with a cap of 4: refused from the prefix alone.
        let err = block_on(read_frame(&mut Cursor::new(bytes), 4)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // A prefix claiming 4 GiB with no payload: refused without allocating.
        let huge = vec![0xff, 0xff, 0xff, 0xff];
        let err = block_on(read_frame(&mut Cursor::new(huge), 1024)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let err = block_on(write_frame(&mut Cursor::new(Vec::new()), b"hello", 4)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}

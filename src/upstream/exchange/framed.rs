//! The body of an answer read by regkeeper's own exchange, as frames: delimited by a length, by
//! chunks, or by the connection's close (RFC 9112 §6.3, §7.1). Reads only when polled, so the
//! client's pace holds back the upstream's; what one read takes is bounded ([`MAX_READ`]), and
//! so are a chunk-size line and the trailer section, which are read past, never kept.
//!
//! A connection read to the exact end of its body goes back to its pool ([`Home`]) at once, in
//! the poll that yields the last bytes: hyper stops polling a body that says it is complete.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use super::Stream;

/// How an answer's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body: an answer to `HEAD`, a `204` or a `304`.
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// The first read of a body asks for this much; each read that fills its space doubles it.
const FIRST_READ: usize = 16 * 1024;
/// The most one read takes (hyper's client read buffer was capped at the same).
pub const MAX_READ: usize = 512 * 1024;
/// The longest chunk-size line (with extensions) read before the body is refused.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// The most trailer bytes read past before the body is refused.
const MAX_TRAILERS: usize = 16 * 1024;

/// Where a connection goes once its body is read to the end.
pub trait Home: Send + Sync {
    fn take_back(&self, stream: Stream);
}

#[derive(Clone, Copy, Debug)]
enum State {
    /// This many body bytes are still to come (some may be buffered).
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer lines after the last chunk, this many bytes read so far.
    Trailers(usize),
    Close,
    Done,
}

pub struct FramedBody {
    stream: Option<Stream>,
    buffer: BytesMut,
    state: State,
    next_read: usize,
    /// Where the connection goes when the body ends cleanly (none: it is closed).
    home: Option<std::sync::Arc<dyn Home>>,
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl FramedBody {
    /// `buffer` holds what was read after the head. A [`Framing::Empty`] or a length the buffer
    /// already covers is better answered without this (see `Pool`), but works here too.
    pub fn new(
        stream: Stream,
        buffer: BytesMut,
        framing: Framing,
        home: Option<std::sync::Arc<dyn Home>>,
    ) -> Self {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(length) => State::Length(length),
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
        };
        let mut body = Self {
            stream: Some(stream),
            buffer,
            state,
            next_read: FIRST_READ,
            home,
        };
        if matches!(body.state, State::Done) {
            body.finish();
        }
        body
    }

    /// The body ended where its framing says: the connection goes home if nothing follows it.
    fn finish(&mut self) {
        self.state = State::Done;
        let stream = self.stream.take();
        if let (Some(stream), Some(home)) = (stream, self.home.take())
            && self.buffer.is_empty()
        {
            home.take_back(stream);
        }
    }

    /// Reads more into the buffer, at most `limit` bytes; `Ok(0)` is the upstream's close.
    fn poll_fill(&mut self, cx: &mut Context<'_>, limit: u64) -> Poll<io::Result<usize>> {
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        let want = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .min(self.next_read);
        self.buffer.reserve(want);
        let mut limited = (&mut self.buffer).limit(want);
        let read = ready!(tokio_util::io::poll_read_buf(
            Pin::new(stream),
            cx,
            &mut limited
        ))?;
        if read == want && self.next_read < MAX_READ {
            self.next_read *= 2;
        }
        Poll::Ready(Ok(read))
    }

    /// Up to `remaining` buffered bytes as a frame, or a read when none are buffered.
    fn poll_data(&mut self, cx: &mut Context<'_>, remaining: u64) -> Poll<io::Result<Bytes>> {
        if self.buffer.is_empty() {
            let read = ready!(self.poll_fill(cx, remaining))?;
            if read == 0 {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
        }
        let take = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(self.buffer.len());
        Poll::Ready(Ok(self.buffer.split_to(take).freeze()))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        loop {
            match self.state {
                State::Done => return Poll::Ready(Ok(None)),
                State::Length(0) => {
                    self.finish();
                    return Poll::Ready(Ok(None));
                }
                State::Length(remaining) => {
                    let data = ready!(self.poll_data(cx, remaining))?;
                    let left = remaining - data.len() as u64;
                    self.state = State::Length(left);
                    if left == 0 {
                        self.finish();
                    }
                    return Poll::Ready(Ok(Some(data)));
                }
                State::ChunkData(remaining) => {
                    let data = ready!(self.poll_data(cx, remaining))?;
                    let left = remaining - data.len() as u64;
                    self.state = if left == 0 {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left)
                    };
                    return Poll::Ready(Ok(Some(data)));
                }
                State::ChunkSize => match httparse::parse_chunk_size(&self.buffer) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.buffer.advance(used);
                        self.state = if size == 0 {
                            State::Trailers(0)
                        } else {
                            State::ChunkData(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if self.buffer.len() < MAX_CHUNK_LINE => {
                        ready!(self.poll_more(cx))?;
                    }
                    _ => return Poll::Ready(Err(invalid("invalid chunk size line"))),
                },
                State::ChunkEnd => {
                    if self.buffer.len() < 2 {
                        ready!(self.poll_more(cx))?;
                        continue;
                    }
                    if &self.buffer[..2] != b"\r\n" {
                        return Poll::Ready(Err(invalid("chunk data longer than its size")));
                    }
                    self.buffer.advance(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers(seen) => match self.buffer.windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        self.buffer.advance(2);
                        self.finish();
                        return Poll::Ready(Ok(None));
                    }
                    Some(line) if seen + line + 2 <= MAX_TRAILERS => {
                        self.buffer.advance(line + 2);
                        self.state = State::Trailers(seen + line + 2);
                    }
                    None if seen + self.buffer.len() < MAX_TRAILERS => {
                        ready!(self.poll_more(cx))?;
                    }
                    _ => return Poll::Ready(Err(invalid("trailers too large"))),
                },
                State::Close => {
                    if !self.buffer.is_empty() {
                        let data = self.buffer.split().freeze();
                        return Poll::Ready(Ok(Some(data)));
                    }
                    if ready!(self.poll_fill(cx, u64::MAX))? == 0 {
                        // The close is the end: the connection is not reused.
                        self.home = None;
                        self.finish();
                        return Poll::Ready(Ok(None));
                    }
                }
            }
        }
    }

    /// A read for framing bytes (chunk lines, CRLFs, trailers): the close is an error here.
    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let read = ready!(self.poll_fill(cx, FIRST_READ as u64))?;
        if read == 0 {
            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
        }
        Poll::Ready(Ok(()))
    }
}

impl Body for FramedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        match ready!(this.poll_next(cx)) {
            Ok(data) => Poll::Ready(data.map(|d| Ok(Frame::data(d)))),
            Err(error) => {
                // Whatever was mid-way on the connection makes it unusable.
                this.state = State::Done;
                this.stream = None;
                this.home = None;
                Poll::Ready(Some(Err(error)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(remaining) => SizeHint::with_exact(remaining),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

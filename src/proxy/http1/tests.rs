//! Bodies as they leave a connection served here: after the head, by their length or in
//! chunks, gathered into one write when small and written as they are when large.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;

use super::{pull, respond::Sent};
use crate::{
    proxy::{ClientBody, LoggedBody},
    upstream::ResponseBody,
};

#[tokio::test]
async fn bodies_follow_the_head_by_length_or_in_chunks_small_or_large() {
    for size in [10, 200_000] {
        let data: Bytes = (0..size).map(|n| (n % 251) as u8).collect();
        for sent in [Sent::AsIs, Sent::Chunked] {
            let (mut near, mut far) = tokio::io::duplex(1 << 20);
            let mut out = BytesMut::from(&b"HTTP/1.1 200 OK\r\n\r\n"[..]);
            let body = LoggedBody::new(
                ClientBody::upstream(
                    ResponseBody::whole(Some(data.clone())),
                    Duration::from_secs(5),
                ),
                None,
            );
            assert!(pull::stream(&mut near, &mut out, body, sent).await);
            drop(near);
            let mut written = Vec::new();
            far.read_to_end(&mut written).await.unwrap();
            let mut expected = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
            match sent {
                Sent::AsIs => expected.extend_from_slice(&data),
                Sent::Chunked => {
                    expected.extend_from_slice(format!("{size:x}\r\n").as_bytes());
                    expected.extend_from_slice(&data);
                    expected.extend_from_slice(b"\r\n0\r\n\r\n");
                }
            }
            assert!(written == expected, "{size} bytes {sent:?}");
            assert!(out.is_empty());
        }
    }
}

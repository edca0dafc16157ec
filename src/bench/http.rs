//! A minimal HTTP/1.1 client over one keep-alive connection: enough to time requests to the
//! node's JSON endpoints without a connection set-up in every sample.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(10);
/// Responses larger than this are refused (the room's state is a few tens of KiB).
const MAX_BODY: usize = 16 << 20;

pub struct HttpConn {
    addr: SocketAddr,
    stream: BufReader<TcpStream>,
}

impl HttpConn {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<HttpConn> {
        let tcp = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .context("connecting timed out")?
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        Ok(HttpConn { addr, stream: BufReader::new(tcp) })
    }

    /// `GET path`: the status and the body.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        self.request("GET", path, &[], b"").await
    }

    /// `method path` with extra `headers` and a `body` (with a `Content-Length` when not empty),
    /// written in one go: the status and the body.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        tokio::time::timeout(TIMEOUT, self.exchange(method, path, headers, body))
            .await
            .with_context(|| format!("{method} {path} took over {TIMEOUT:?}"))?
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        let mut request = request.into_bytes();
        request.extend_from_slice(body);
        self.stream.get_mut().write_all(&request).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .with_context(|| format!("not an HTTP status line: {line:?}"))?;
        let mut length = None;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                anyhow::bail!("the connection ended inside the response headers");
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse::<usize>().context("a bad Content-Length")?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                anyhow::bail!("chunked responses are not supported by this client");
            }
        }
        let length = length.context("a response without Content-Length")?;
        anyhow::ensure!(length <= MAX_BODY, "a {length}-byte response is too large");
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        Ok((status, body))
    }
}

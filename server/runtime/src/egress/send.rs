//! Sending an admitted request: resolve, check the addresses, add credentials, connect to
//! the checked address, cap the response.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

use super::{CallEgress, EgressDenial, EgressRequest, EgressVerdict, SendResult, Target};

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads a request body to its end in the background. Dropping it instead makes the guest
/// see a reset stream and fail at random (measured; see the wasmtime notes).
pub(crate) fn drain(body: WasiBody) {
    tokio::spawn(async move {
        let mut body = body;
        while let Some(Ok(_)) = body.frame().await {}
    });
}

pub(crate) async fn send(
    call: Arc<CallEgress>,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    target: Target,
) -> SendResult {
    let (mut parts, body) = request.into_parts();
    let method = parts.method.clone();
    let deny = |denial: EgressDenial, body: WasiBody| -> SendResult {
        call.record(&method, &target.url, EgressVerdict::Denied { denial });
        drain(body);
        Err(Error::HttpRequestDenied)
    };

    // Step 3: resolve (within the ceiling's DNS timeout: a slow resolver must not hold
    // the call) and check every address. An IP literal resolves to itself.
    let bare = target.host.trim_start_matches('[').trim_end_matches(']');
    let ceiling = &call.policy.ceiling;
    let addrs: Vec<SocketAddr> = match bare.parse() {
        Ok(ip) => vec![SocketAddr::new(ip, target.port)],
        Err(_) => {
            let lookup = tokio::net::lookup_host((bare, target.port));
            match resolve(lookup, ceiling.dns_timeout()).await {
                Ok(addrs) => addrs,
                Err(message) => {
                    let denial = EgressDenial::Unresolved {
                        url: target.url.clone(),
                        host: target.host.clone(),
                        message,
                    };
                    return deny(denial, body);
                }
            }
        }
    };
    if addrs.is_empty() {
        let denial = EgressDenial::Unresolved {
            url: target.url.clone(),
            host: target.host.clone(),
            message: "no addresses".into(),
        };
        return deny(denial, body);
    }
    let named = target.rule.names_ip();
    for addr in &addrs {
        let ip = addr.ip().to_canonical();
        // The operator's ceiling first: no manifest entry can lift it.
        if let Err(rule) = ceiling.check_address(*addr) {
            let denial = EgressDenial::Ceiling {
                url: target.url.clone(),
                address: Some(ip),
                rule,
            };
            return deny(denial, body);
        }
        if let Some(class) = super::blocked_class(ip)
            && named != Some(ip)
        {
            let denial = EgressDenial::BlockedAddress {
                url: target.url.clone(),
                host: target.host.clone(),
                address: ip,
                class: class.to_string(),
            };
            return deny(denial, body);
        }
    }

    // Step 4: credentials from the host, never from the guest.
    let who = EgressRequest {
        tenant: &call.tenant,
        user: &call.user,
        plugin: &call.plugin,
        method: &parts.method,
        url: &target.url,
        rule: &target.rule,
    };
    match call.authorizer.credentials(&who).await {
        Ok(headers) => {
            for (name, value) in headers {
                parts.headers.insert(name, value);
            }
        }
        Err(message) => {
            let denial = EgressDenial::Credentials {
                url: target.url.clone(),
                message,
            };
            return deny(denial, body);
        }
    }

    // The body is buffered (bounded): hyper would otherwise drop a GET's streaming body,
    // and plugin requests are API calls, not uploads.
    let body = collect_capped(body, call.policy.max_request_bytes).await?;

    // Step 5: connect to the addresses checked above, not to the name again, and record
    // the one connected to (or, when none answered, the last one tried).
    let connect_timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let connected = connect(&addrs, connect_timeout).await;
    let address = match &connected {
        Ok((_, address)) => *address,
        Err(_) => addrs[addrs.len() - 1],
    };
    call.record(
        &parts.method,
        &target.url,
        EgressVerdict::Allowed {
            rule: target.rule.to_string(),
            address,
        },
    );
    let (stream, _) = connected?;
    let stream: Box<dyn Io> = if target.tls {
        let name = rustls::pki_types::ServerName::try_from(bare.to_string())
            .map_err(|_| Error::InvalidDnsNameError(rustls::pki_types::InvalidDnsNameError))?;
        let tls = tokio_rustls::TlsConnector::from(tls_config())
            .connect(name, stream)
            .await
            .map_err(Error::Tls)?;
        Box::new(tls)
    } else {
        Box::new(stream)
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(Error::from)?;
    let conn = tokio::spawn(conn);

    // Origin-form: the absolute URI is only for proxies.
    parts.uri = http::Uri::builder()
        .path_and_query(parts.uri.path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    let request = http::Request::from_parts(parts, Full::new(body));
    let method = request.method().clone();
    let response = match options.and_then(|o| o.first_byte_timeout) {
        Some(timeout) => tokio::time::timeout(timeout, sender.send_request(request))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)?,
        None => sender.send_request(request).await,
    }
    .map_err(Error::from)?;

    // Step 6: cap the response body, up front when the length is declared.
    let limit = call.policy.max_response_bytes;
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        call.record(
            &method,
            &target.url,
            EgressVerdict::ResponseTooLarge { limit },
        );
        return Err(Error::HttpResponseBodySize(declared));
    }
    let url = target.url;
    let response = response.map(move |incoming| {
        CappedBody {
            inner: incoming,
            seen: 0,
            limit,
            tripped: false,
            call,
            method,
            url,
        }
        .boxed_unsync()
    });
    let io: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send> =
        Box::new(async move {
            match conn.await {
                Ok(result) => result.map_err(Error::from),
                Err(_) => Ok(()),
            }
        });
    Ok((response, io))
}

/// Runs a DNS lookup for at most `timeout`: the system resolver may take tens of seconds
/// to give up, and the call would hold its slot all that time.
async fn resolve<I: Iterator<Item = SocketAddr>>(
    lookup: impl Future<Output = std::io::Result<I>>,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, String> {
    match tokio::time::timeout(timeout, lookup).await {
        Ok(Ok(addrs)) => Ok(addrs.collect()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "the DNS lookup took longer than {} ms (egress.dns_timeout_ms)",
            timeout.as_millis()
        )),
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

async fn connect(
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), Error> {
    let mut last = Error::ConnectionRefused;
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok((stream, *addr)),
            Ok(Err(e)) => last = Error::Connect(e),
            Err(_) => last = Error::ConnectionTimeout,
        }
    }
    Err(last)
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            Arc::new(
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default TLS versions")
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        })
        .clone()
}

async fn collect_capped(mut body: WasiBody, limit: u64) -> Result<Bytes, Error> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                drain(body);
                return Err(Error::HttpRequestBodySize(Some(limit)));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// A response body that fails once more than `limit` bytes have arrived, and records it.
struct CappedBody {
    inner: hyper::body::Incoming,
    seen: u64,
    limit: u64,
    tripped: bool,
    call: Arc<CallEgress>,
    method: http::Method,
    url: String,
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.tripped {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            self.seen += data.len() as u64;
            if self.seen > self.limit {
                self.tripped = true;
                let limit = self.limit;
                self.call.record(
                    &self.method,
                    &self.url,
                    EgressVerdict::ResponseTooLarge { limit },
                );
                return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(limit)))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.tripped || self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dns_lookup_that_never_answers_times_out() {
        let never = std::future::pending::<std::io::Result<std::vec::IntoIter<SocketAddr>>>();
        let started = std::time::Instant::now();
        let error = resolve(never, Duration::from_millis(50)).await.unwrap_err();
        assert!(error.contains("egress.dns_timeout_ms"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let ok = async { Ok(vec![SocketAddr::from(([93, 184, 216, 34], 443))].into_iter()) };
        assert_eq!(
            resolve(ok, Duration::from_millis(50)).await.unwrap().len(),
            1
        );
    }

    /// The egress record names the address connected to: with a name's first address
    /// refusing, that is a later one, not the first one resolved.
    #[tokio::test]
    async fn the_address_connected_to_is_not_the_first_one_resolved_when_that_one_refuses() {
        let refusing = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let listening = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listening.local_addr().unwrap();
        let (_, address) = connect(&[refusing, open], Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(address, open, "the first address refused");
        assert!(matches!(
            connect(&[refusing], Duration::from_secs(2)).await,
            Err(Error::Connect(_))
        ));
    }
}

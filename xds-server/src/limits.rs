//! Every limit the xDS server puts on what one client can make it hold, do or write, in
//! one place: what each bounds, its default, and why that default. The controller's flags
//! set them (README, "Operations: limits"); a client over a limit gets a clear gRPC status
//! and a metric, and everyone else is unaffected.
//!
//! Each section is its own struct so that a part of the server takes only what it needs.

/// All of the server's limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Per connection and for all connections together (the transport).
    pub connection: ConnectionLimits,
    /// Per ADS stream: requests, subscriptions, unknown types, what it may log.
    pub stream: StreamLimits,
    /// What a proxy's `Node` may carry (id, metadata, labels).
    pub node: NodeLimits,
    /// What the debug endpoint echoes back.
    pub debug: DebugLimits,
    /// What a snapshot keeps of the API listeners proxyless gRPC clients ask for by name.
    pub api_listeners: ApiListenerLimits,
}

/// Per connection and for all connections together.
///
/// Sizing: a proxy opens one HTTP/2 connection and one or two ADS streams on it (Envoy: one
/// ADS stream; gRPC's xDS client: one per server); nothing else is served on this port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open ADS connections, all together; one accepted past it is closed at once (and
    /// counted, `limit="connections"`). Default 10,000: one replica serving more proxies
    /// than that should be scaled out; each connection costs an fd and tens of KB.
    pub max_connections: usize,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` advertised on each connection; a client
    /// that opens more gets each extra stream reset (REFUSED_STREAM). Default 16: a proxy
    /// uses one or two (hyper's own default of 200 is lost when tonic passes none).
    pub max_streams_per_connection: u32,
    /// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`. Default 64 KiB: Envoy's own default cap on
    /// request headers is 60 KiB (`max_request_headers_kb`); ADS requests carry a few
    /// hundred bytes, a bearer token at most a few KB.
    pub max_header_list_size: u32,
    /// HTTP/2 initial stream window: what a client may send on one stream before the
    /// server reads it. Default 256 KiB: a paused stream buffers at most that in h2.
    pub stream_window: u32,
    /// HTTP/2 initial connection window: what a client may send on all streams of a
    /// connection before the server reads it. Default 1 MiB.
    pub connection_window: u32,
    /// A connection with no open stream for this long is closed (also one that never sent
    /// the HTTP/2 preface or a stream). Default 60 s: a proxy opens its ADS stream right
    /// after connecting, and keeps it open.
    pub idle_timeout: std::time::Duration,
    /// A connection older than this is told to go away (HTTP/2 GOAWAY): its proxy opens a
    /// new one, maybe to another replica. Off (`None`) by default, as grpc-go's
    /// `MaxConnectionAge` (v1.6x keepalive.ServerParameters: infinity): every reconnect
    /// is a full resync of the proxy; set it (e.g. 30 min) to rebalance proxies across
    /// replicas after a scale-up.
    pub max_age: Option<std::time::Duration>,
    /// After the GOAWAY of `max_age`, how long its streams have before the connection is
    /// closed. Default 10 s, grpc-go's and istiod's `MaxConnectionAgeGrace` order.
    pub max_age_grace: std::time::Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 10_000,
            max_streams_per_connection: 16,
            max_header_list_size: 64 << 10,
            stream_window: 256 << 10,
            connection_window: 1 << 20,
            idle_timeout: std::time::Duration::from_secs(60),
            max_age: None,
            max_age_grace: std::time::Duration::from_secs(10),
        }
    }
}

/// Per ADS stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    /// A stream that sends no request for this long after it opened is ended
    /// (DEADLINE_EXCEEDED). Default 10 s: Envoy and gRPC send their first request at once.
    pub first_request_timeout: std::time::Duration,
    /// Names one stream may subscribe to, per type (RESOURCE_EXHAUSTED above it). Default
    /// 100,000: a proxy subscribes at most to every cluster of the mesh (large meshes have
    /// tens of thousands); the cost of a request is linear in its names.
    pub max_subscribed_names: usize,
    /// Bytes of one resource name (RESOURCE_EXHAUSTED above it). Default 1,024: Lanyard's
    /// names are a DNS name (253), a port and a subset (63) at most.
    pub max_name_length: usize,
    /// The largest request (RESOURCE_EXHAUSTED above it). 16 MiB.
    pub max_request_bytes: usize,
    /// Bytes of partially received requests past their first [`Self::free_request_bytes`]
    /// held by all streams together; a stream that cannot get its share within
    /// [`Self::pending_bytes_wait`] is ended (RESOURCE_EXHAUSTED) and meanwhile stops
    /// reading (HTTP/2 flow control holds its client). Default 128 MiB: eight requests
    /// of the largest size at once.
    pub max_pending_request_bytes: usize,
    /// The first bytes of each request, not counted in `max_pending_request_bytes`, so a
    /// proxy's ordinary requests never wait. Default 64 KiB.
    pub free_request_bytes: usize,
    /// See `max_pending_request_bytes`. Default 10 s.
    pub pending_bytes_wait: std::time::Duration,
}

impl StreamLimits {
    /// The permits of the semaphore that keeps [`Self::max_pending_request_bytes`]: the
    /// bound, or tokio's largest count when the bound is above it.
    pub fn pending_request_permits(&self) -> usize {
        self.max_pending_request_bytes
            .min(tokio::sync::Semaphore::MAX_PERMITS)
    }
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            first_request_timeout: std::time::Duration::from_secs(10),
            max_subscribed_names: 100_000,
            max_name_length: 1024,
            max_request_bytes: 16 << 20,
            max_pending_request_bytes: 128 << 20,
            free_request_bytes: 64 << 10,
            pending_bytes_wait: std::time::Duration::from_secs(10),
        }
    }
}

/// What a proxy's `Node` may carry. A node over any of these is refused with
/// RESOURCE_EXHAUSTED before anything of it is kept. The label bounds are Kubernetes' own
/// (k8s.io/apimachinery v0.3x pkg/util/validation/validation.go: a qualified name is an
/// optional DNS-subdomain prefix of at most 253 bytes, `/`, and a name of at most 63; a
/// label value at most 63), so a real pod's labels always fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLimits {
    /// Bytes of `node.id`. Default 1024: Istio's longest form,
    /// `sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>`, is at most
    /// 45 + 253 + 63 + 63 + 253 bytes plus separators (about 690).
    pub id_bytes: usize,
    /// Bytes of `node.cluster`. Default 1024, as the id.
    pub cluster_bytes: usize,
    /// Bytes of `node.metadata`, encoded. Default 256 KiB: Kubernetes' bound on all of a
    /// pod's annotations together (apimachinery v0.3x
    /// pkg/api/validation/objectmeta.go, `TotalAnnotationSizeLimitB`); Istio's sidecar
    /// metadata, labels and annotations included, is a few KiB.
    pub metadata_bytes: usize,
    /// How many `LABELS`. Default 256 (Kubernetes sets no count; pods carry tens).
    pub labels: usize,
    /// Bytes of a label key. Default 317: a 253-byte prefix, `/`, a 63-byte name.
    pub label_key_bytes: usize,
    /// Bytes of a label value. Default 63, as Kubernetes.
    pub label_value_bytes: usize,
}

impl Default for NodeLimits {
    fn default() -> Self {
        NodeLimits {
            id_bytes: 1024,
            cluster_bytes: 1024,
            metadata_bytes: 256 * 1024,
            labels: 256,
            label_key_bytes: 253 + 1 + 63,
            label_value_bytes: 63,
        }
    }
}

/// What the debug endpoint echoes back: every field a client chose (node id, resource
/// names, NACK messages, versions) is clipped, and every list a client sizes is cut, so a
/// page grows with the number of proxies and types, not with what one proxy sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebugLimits {
    /// Bytes of one text field on a debug page. Default 512: twice [`CLIENT_TEXT`], so the
    /// longest name Lanyard gives a resource (`outbound|65535||` and a Service's FQDN:
    /// 63 + 63 bytes and the cluster domain) is shown whole.
    pub text_bytes: usize,
    /// Items of one client-sized list (subscribed names, ...) shown, then "and K more".
    /// Default 100: enough to read a real proxy's subscriptions, which the config dump
    /// shows in full anyway.
    pub list_items: usize,
}

impl Default for DebugLimits {
    fn default() -> Self {
        DebugLimits {
            text_bytes: 2 * CLIENT_TEXT,
            list_items: 100,
        }
    }
}

/// What one snapshot keeps of the API listeners built for names proxyless gRPC clients ask
/// for (`xds:///NAME`). Names that resolve to nothing are never kept, and only a canonical
/// spelling resolves (see `api_listeners`), so only a few names per Service port can be
/// kept at all; these bound them anyway. Past either bound an API listener is built for
/// each request and not kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiListenerLimits {
    /// Listeners kept. Default 4096: a dozen spellings of each of some hundreds of
    /// Service ports.
    pub entries: usize,
    /// Bytes they hold (names and encodings). Default 8 MiB: an API listener is about
    /// 300 bytes encoded, so the entry bound is reached first by real names.
    pub bytes: usize,
}

impl Default for ApiListenerLimits {
    fn default() -> Self {
        ApiListenerLimits {
            entries: 4096,
            bytes: 8 << 20,
        }
    }
}

/// How much of a client's text (a node id, a NACK message, a resource name) goes into a
/// log line, a gRPC status message or a debug page by default.
pub const CLIENT_TEXT: usize = 256;

/// `text` as written where a client must not decide the size: at most `limit` bytes of it
/// (cut at a character boundary), then how many bytes were left out.
pub fn clip(text: &str, limit: usize) -> Clipped<'_> {
    Clipped { text, limit }
}

/// The first `limit` bytes of `text` at most, cut at a character boundary.
pub fn prefix(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// See [`clip`].
#[derive(Clone, Copy, Debug)]
pub struct Clipped<'a> {
    text: &'a str,
    limit: usize,
}

impl std::fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = prefix(self.text, self.limit);
        if kept.len() == self.text.len() {
            return f.write_str(self.text);
        }
        write!(f, "{kept}... ({} more bytes)", self.text.len() - kept.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_unchanged_and_long_text_is_cut_at_a_character() {
        assert_eq!(clip("reviews", 7).to_string(), "reviews");
        assert_eq!(clip("reviews", 3).to_string(), "rev... (4 more bytes)");
        // 'é' is two bytes: a cut inside it moves back to its start.
        assert_eq!(clip("aé", 2).to_string(), "a... (2 more bytes)");
        assert_eq!(clip("", 0).to_string(), "");
    }
}

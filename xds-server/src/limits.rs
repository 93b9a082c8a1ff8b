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
}

/// Per connection and for all connections together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionLimits {}

/// Per ADS stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamLimits {}

/// What a proxy's `Node` may carry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeLimits {}

/// What the debug endpoint echoes back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DebugLimits {}

/// How much of a client's text (a node id, a NACK message, a resource name) goes into a
/// log line, a gRPC status message or a debug page by default.
pub const CLIENT_TEXT: usize = 256;

/// `text` as written where a client must not decide the size: at most `limit` bytes of it
/// (cut at a character boundary), then how many bytes were left out.
pub fn clip(text: &str, limit: usize) -> Clipped<'_> {
    Clipped { text, limit }
}

/// See [`clip`].
#[derive(Clone, Copy, Debug)]
pub struct Clipped<'a> {
    text: &'a str,
    limit: usize,
}

impl std::fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.text.len() <= self.limit {
            return f.write_str(self.text);
        }
        let mut end = self.limit;
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        write!(
            f,
            "{}... ({} more bytes)",
            &self.text[..end],
            self.text.len() - end
        )
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

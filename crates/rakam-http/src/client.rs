//! Who is asking: the client's address (the socket's peer, or what a
//! trusted proxy says in `X-Forwarded-For`), user agent and referrer.

use std::net::{IpAddr, SocketAddr};

use axum::http::{header, HeaderMap};
use rakam_ingest::RequestContext;

use crate::AppState;

/// An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) as the IPv4
/// network it is, so its prefix counts IPv4 bits.
fn canonical_network(network: IpAddr, prefix: u8) -> (IpAddr, u8) {
    match network {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) if prefix >= 96 => (IpAddr::V4(v4), prefix - 96),
            _ => (network, prefix.min(128)),
        },
        IpAddr::V4(_) => (network, prefix.min(32)),
    }
}

fn in_network(address: IpAddr, network: IpAddr, prefix: u8) -> bool {
    let (network, prefix) = canonical_network(network, prefix);
    match (address.to_canonical(), network) {
        (IpAddr::V4(address), IpAddr::V4(network)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(address) & mask == u32::from(network) & mask
        }
        (IpAddr::V6(address), IpAddr::V6(network)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(address) & mask == u128::from(network) & mask
        }
        _ => false,
    }
}

/// The client's address. Behind trusted proxies, `X-Forwarded-For` is read
/// from the right, skipping the proxies' own entries: the first address not
/// of a trusted proxy is the client (entries further left could be forged).
pub(crate) fn client_address(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[(IpAddr, u8)],
) -> IpAddr {
    let is_trusted = |address: IpAddr| {
        trusted
            .iter()
            .any(|(network, prefix)| in_network(address, *network, *prefix))
    };
    if !is_trusted(peer) {
        return peer;
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for entry in forwarded.into_iter().rev() {
        // An entry that is not an address ends the trusted chain: what is
        // left of it may have been written by anyone.
        let Ok(address) = entry.parse::<IpAddr>() else {
            break;
        };
        client = address;
        if !is_trusted(address) {
            break;
        }
    }
    client
}

/// A client on the server's own machine that did not come through a
/// proxy: a same-host reverse proxy connects from loopback too, but says
/// whom it forwards. `server.trust_loopback = false` trusts no one.
pub(crate) fn is_local_client(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> bool {
    let proxied = ["x-forwarded-for", "forwarded", "x-real-ip"]
        .iter()
        .any(|name| headers.contains_key(*name));
    state.rakam.config().server.trust_loopback && peer.ip().is_loopback() && !proxied
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

pub(crate) fn request_context(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> RequestContext {
    RequestContext {
        client_ip: Some(client_address(peer.ip(), headers, &state.trusted_proxies)),
        user_agent: header_text(headers, header::USER_AGENT),
        referrer: header_text(headers, header::REFERER),
        received_at_ms: rakam_common::time::now_millis(),
        request_id: uuid_like(),
    }
}

/// A random request id (for logs).
fn uuid_like() -> String {
    rakam_store_api::random_key()[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().expect("header"));
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = vec![(ip("10.0.0.0"), 8)];
        let headers = forwarded("6.6.6.6, 1.2.3.4, 10.0.0.7");
        assert_eq!(
            client_address(ip("10.0.0.1"), &headers, &trusted),
            ip("1.2.3.4")
        );
        assert_eq!(
            client_address(ip("9.9.9.9"), &headers, &trusted),
            ip("9.9.9.9")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_address(ip("::ffff:10.0.0.1"), &forwarded("2001:db8::5"), &trusted),
            ip("2001:db8::5")
        );
        assert!(in_network(ip("2001:db8::1"), ip("2001:db8::"), 32));
        assert!(!in_network(ip("2001:db9::1"), ip("2001:db8::"), 32));
        assert!(in_network(ip("1.2.3.4"), ip("0.0.0.0"), 0));
        // A mapped network's prefix counts IPv4 bits; nothing else matches.
        assert!(in_network(ip("10.0.0.5"), ip("::ffff:10.0.0.5"), 128));
        assert!(!in_network(ip("9.9.9.9"), ip("::ffff:10.0.0.5"), 128));
        let mapped = vec![(ip("::ffff:10.0.0.5"), 128)];
        assert_eq!(
            client_address(ip("9.9.9.9"), &forwarded("1.1.1.1"), &mapped),
            ip("9.9.9.9")
        );
        // An entry that is no address stops the chain.
        assert_eq!(
            client_address(
                ip("10.0.0.1"),
                &forwarded("6.6.6.6, unknown, 10.0.0.2"),
                &trusted
            ),
            ip("10.0.0.2")
        );
    }
}

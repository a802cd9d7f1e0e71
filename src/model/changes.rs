//! What differs between two translations, host by host: the publisher's stages (the routing table, upstream
//! policies, metrics) look only at the hosts that changed.

use std::sync::Arc;

use super::{HostModel, SetModel};

/// A host whose model differs between two versions of a listener set: (before, after), `None` where absent.
pub type HostChange<'a> = (Option<&'a Arc<HostModel>>, Option<&'a Arc<HostModel>>);

/// The hosts whose model differs between two versions of a listener set's model, in host order. Both host
/// lists are sorted by host (as translation makes them). A host handed out again as the same `Arc` is passed
/// over without reading it, so after an incremental translation this costs a pointer comparison per host; a
/// host equal by value counts as unchanged.
pub fn changed_hosts<'a>(before: &'a SetModel, after: &'a SetModel) -> impl Iterator<Item = HostChange<'a>> {
    let (mut olds, mut news) = (before.hosts.iter().peekable(), after.hosts.iter().peekable());
    std::iter::from_fn(move || loop {
        return match (olds.peek(), news.peek()) {
            (Some(o), Some(n)) if Arc::ptr_eq(o, n) => {
                olds.next();
                news.next();
                continue;
            }
            (Some(o), Some(n)) => match o.host.cmp(&n.host) {
                std::cmp::Ordering::Less => Some((olds.next(), None)),
                std::cmp::Ordering::Greater => Some((None, news.next())),
                std::cmp::Ordering::Equal if o == n => {
                    olds.next();
                    news.next();
                    continue;
                }
                std::cmp::Ordering::Equal => Some((olds.next(), news.next())),
            },
            (Some(_), None) => Some((olds.next(), None)),
            (None, Some(_)) => Some((None, news.next())),
            (None, None) => None,
        };
    })
}

//! What the admin endpoint reports: this node's [`Status`] (gathered from
//! the node's own accessors, no network), and the [`ClusterView`] the
//! dashboard draws, which adds what the peers report of their links.
//!
//! A node only knows its own links. To draw the links between its peers,
//! every node that serves an admin endpoint also runs a small [`Responder`]:
//! a mailbox in the service group [`ADMIN_GROUP`] that answers a
//! [`ViewQuery`] with its links. `/cluster` asks each connected peer's
//! responder (all at once, [`VIEW_TIMEOUT`] at most); a peer without an
//! admin endpoint is drawn with the one link this node knows.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reign_proto::poison::lock;
use reign_proto::{Mailbox, Node, RegistryError};
use serde::{Deserialize, Serialize};

use crate::driver::CloseReasons;
use crate::{Reign, Runtime};

/// The service group of the admin responders (one member per node that
/// serves an admin endpoint).
pub const ADMIN_GROUP: &str = "reign.admin";

/// How long `/cluster` waits for the peers' answers.
pub const VIEW_TIMEOUT: Duration = Duration::from_millis(500);

/// The largest queues `/status` lists.
const LARGEST_QUEUES: usize = 10;

/// A node's state, as the admin endpoint reports it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// The node's id.
    pub node: u16,
    /// This start of the node (nanoseconds since the Unix epoch at start).
    pub incarnation: u64,
    /// The reign version it runs.
    pub version: String,
    /// Seconds since it started.
    pub uptime_secs: f64,
    /// The address its cluster listener is bound to.
    pub listen: Option<String>,
    /// Whether it has begun shutting down.
    pub shutting_down: bool,
    /// Every other member, connected or not, in id order.
    pub peers: Vec<PeerStatus>,
    /// Every name with its claimants (the winner first), as this node sees them.
    pub names: BTreeMap<String, Vec<Claimant>>,
    /// Every service group with its members.
    pub groups: BTreeMap<String, Vec<Claimant>>,
    /// Every topic with the nodes that have subscribers.
    pub topics: BTreeMap<String, Vec<u16>>,
    /// Open mailboxes and the largest queues.
    pub mailboxes: MailboxesStatus,
    /// The request tables (`Node::request_tables`).
    pub requests: BTreeMap<String, u64>,
    /// Every node counter (`NodeStats`), drops included.
    pub counters: BTreeMap<String, u64>,
}

/// One peer, as this node sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's id.
    pub node: u16,
    /// `"up"` or `"down"`.
    pub state: String,
    /// The last ping's round trip in microseconds while the link is up
    /// (none before the first answered ping, one `Tuning::ping_interval`
    /// after the link came up).
    pub rtt_us: Option<u64>,
    /// User messages sent to it.
    pub messages_out: u64,
    /// User messages received from it.
    pub messages_in: u64,
    /// Plaintext bytes sent to it.
    pub bytes_out: u64,
    /// Plaintext bytes received from it.
    pub bytes_in: u64,
    /// Bytes waiting in its outbound queue.
    pub queued_bytes: u64,
    /// Bytes its messages hold here, delivered and not yet received.
    pub unread_bytes: u64,
    /// Connections established to it.
    pub connects: u64,
    /// Connections established after the first one.
    pub reconnects: u64,
    /// Connections to it lost.
    pub disconnects: u64,
    /// Sends dropped because it was not connected.
    pub dropped_unreachable: u64,
    /// Sends refused because its queue was full.
    pub dropped_full: u64,
    /// Why its last connection closed, if one did.
    pub last_close_reason: Option<String>,
}

/// A mailbox holding a name or a membership.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claimant {
    /// Its node.
    pub node: u16,
    /// Its id, `<node.incarnation.serial>`.
    pub mailbox: String,
}

/// This node's mailboxes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MailboxesStatus {
    /// Open mailboxes.
    pub count: usize,
    /// The non-empty mailboxes with the most queued bytes (then
    /// messages), largest first, at most 10.
    pub largest: Vec<MailboxQueue>,
}

/// One mailbox's queue.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MailboxQueue {
    /// Its id.
    pub mailbox: String,
    /// Queued messages.
    pub messages: usize,
    /// Queued bytes.
    pub bytes: usize,
}

/// The cluster as one node sees it: what the dashboard draws.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClusterView {
    /// Whose view this is.
    pub node: u16,
    /// The reign version it runs.
    pub version: String,
    /// When the view was taken, in milliseconds since the Unix epoch on the
    /// node's clock (the dashboard's message rates divide by its changes).
    pub time_ms: u64,
    /// Every node it knows of: itself, its members, and nodes its peers report.
    pub nodes: Vec<NodeView>,
    /// Every link it knows of, each once (`a < b`).
    pub links: Vec<LinkView>,
}

/// A node in a [`ClusterView`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeView {
    /// Its id.
    pub id: u16,
    /// `"self"`, `"up"` (connected to the viewer, or reported up by a
    /// peer), or `"down"`.
    pub state: String,
    /// The names its mailboxes claim.
    pub names: Vec<String>,
    /// Whether its own links are in the picture (the viewer, or a peer
    /// whose admin responder answered).
    pub reported: bool,
}

/// A link in a [`ClusterView`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkView {
    /// The lower node id.
    pub a: u16,
    /// The higher node id.
    pub b: u16,
    /// `"up"` or `"down"`.
    pub state: String,
    /// User messages over it so far, both ways, as `reported_by` counts them.
    pub messages: u64,
    /// Its last round trip in microseconds, if known.
    pub rtt_us: Option<u64>,
    /// The node whose figures these are.
    pub reported_by: u16,
}

/// The question a node's admin endpoint asks its peers' responders.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct ViewQuery;

/// A responder's answer: its links.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct LinksReport(Vec<LinkReport>);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct LinkReport {
    peer: u16,
    connected: bool,
    messages: u64,
    rtt_us: Option<u64>,
}

/// Everything the endpoint reads a node through.
pub(crate) struct Source {
    node: Node,
    listen: Option<SocketAddr>,
    close_reasons: Option<CloseReasons>,
}

impl Source {
    pub(crate) fn new<R: Runtime>(node: &Reign<R>) -> Source {
        Source {
            node: node.node().clone(),
            listen: node.local_addr(),
            close_reasons: node.running.as_ref().map(|r| r.close_reasons.clone()),
        }
    }

    pub(crate) fn status(&self) -> Status {
        let node = &self.node;
        let reasons = self
            .close_reasons
            .as_ref()
            .map(|r| lock(r).clone())
            .unwrap_or_default();
        let peers = node
            .peer_stats()
            .into_iter()
            .map(|p| PeerStatus {
                node: p.node.0,
                state: if p.connected { "up" } else { "down" }.to_owned(),
                rtt_us: p.rtt_micros.filter(|_| p.connected),
                messages_out: p.messages_out,
                messages_in: p.messages_in,
                bytes_out: p.bytes_out,
                bytes_in: p.bytes_in,
                queued_bytes: p.queued_bytes,
                unread_bytes: p.unread_bytes,
                connects: p.connects,
                reconnects: p.connects.saturating_sub(1),
                disconnects: p.disconnects,
                dropped_unreachable: p.dropped_unreachable,
                dropped_full: p.dropped_full,
                last_close_reason: reasons.get(&p.node).cloned(),
            })
            .collect();
        let claimant = |id: reign_proto::MailboxId| Claimant {
            node: id.node.0,
            mailbox: id.to_string(),
        };
        // The winner of each name first (what `lookup` returns), then by id.
        let names = node
            .registry_view()
            .into_keys()
            .map(|name| {
                let claimants = node
                    .lookup_all(&name)
                    .iter()
                    .map(|a| claimant(a.id()))
                    .collect();
                (name, claimants)
            })
            .collect();
        let groups = node
            .group_view()
            .into_iter()
            .map(|(group, ids)| (group, ids.into_iter().map(claimant).collect()))
            .collect();
        let topics = node
            .topic_view()
            .into_iter()
            .map(|(topic, nodes)| (topic, nodes.into_iter().map(|n| n.0).collect()))
            .collect();
        let largest = node
            .largest_mailboxes(LARGEST_QUEUES)
            .into_iter()
            .filter(|&(_, messages, _)| messages > 0)
            .map(|(id, messages, bytes)| MailboxQueue {
                mailbox: id.to_string(),
                messages,
                bytes,
            })
            .collect();
        let started = SystemTime::UNIX_EPOCH + Duration::from_nanos(node.incarnation().0);
        Status {
            node: node.id().0,
            incarnation: node.incarnation().0,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_secs: SystemTime::now()
                .duration_since(started)
                .unwrap_or_default()
                .as_secs_f64(),
            listen: self.listen.map(|a| a.to_string()),
            shutting_down: node.is_shut_down(),
            peers,
            names,
            groups,
            topics,
            mailboxes: MailboxesStatus {
                count: node.mailbox_count(),
                largest,
            },
            requests: numbers(&node.request_tables()),
            counters: numbers(&node.stats()),
        }
    }

    /// The cluster as this node sees it, with the links its peers report.
    pub(crate) fn cluster(&self) -> ClusterView {
        let status = self.status();
        let me = status.node;
        let mut nodes: BTreeMap<u16, NodeView> = BTreeMap::new();
        view_node(&mut nodes, me, "self", true);
        let mut links: BTreeMap<(u16, u16), LinkView> = BTreeMap::new();
        for peer in &status.peers {
            view_node(&mut nodes, peer.node, &peer.state, false);
            links.insert(
                (me.min(peer.node), me.max(peer.node)),
                LinkView {
                    a: me.min(peer.node),
                    b: me.max(peer.node),
                    state: peer.state.clone(),
                    messages: peer.messages_out + peer.messages_in,
                    rtt_us: peer.rtt_us,
                    reported_by: me,
                },
            );
        }
        for (peer, report) in self.peer_reports() {
            view_node(&mut nodes, peer, "up", true);
            for link in report.0 {
                if link.peer == me {
                    continue;
                }
                let state = if link.connected { "up" } else { "down" };
                view_node(&mut nodes, link.peer, state, false);
                let key = (peer.min(link.peer), peer.max(link.peer));
                links.entry(key).or_insert(LinkView {
                    a: key.0,
                    b: key.1,
                    state: state.to_owned(),
                    messages: link.messages,
                    rtt_us: link.rtt_us,
                    reported_by: peer,
                });
            }
        }
        for (name, claimants) in &status.names {
            let owners: BTreeSet<u16> = claimants.iter().map(|c| c.node).collect();
            for owner in owners {
                view_node(&mut nodes, owner, "down", false);
                if let Some(n) = nodes.get_mut(&owner) {
                    n.names.push(name.clone());
                }
            }
        }
        ClusterView {
            node: me,
            version: status.version,
            time_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            nodes: nodes.into_values().collect(),
            links: links.into_values().collect(),
        }
    }

    /// Asks every connected peer's admin responder for its links, all at
    /// once; peers that do not answer within [`VIEW_TIMEOUT`] are left out.
    fn peer_reports(&self) -> Vec<(u16, LinksReport)> {
        let me = self.node.id();
        let deadline = Instant::now() + VIEW_TIMEOUT;
        let asked: Vec<_> = self
            .node
            .members(ADMIN_GROUP)
            .into_iter()
            .filter(|a| a.id().node != me && self.node.is_connected(a.id().node))
            .map(|a| (a.id().node.0, self.node.request(&a, ViewQuery, deadline)))
            .collect();
        asked
            .into_iter()
            .filter_map(|(peer, reply)| {
                let message = futures_lite::future::block_on(reply).ok()?;
                let report = message.downcast::<LinksReport>().ok()?;
                Some((peer, report))
            })
            .collect()
    }
}

/// Adds node `id` to a view, or updates it: reported once reported by
/// anyone, up once anyone sees it up.
fn view_node(nodes: &mut BTreeMap<u16, NodeView>, id: u16, state: &str, reported: bool) {
    let entry = nodes.entry(id).or_insert_with(|| NodeView {
        id,
        state: state.to_owned(),
        names: Vec::new(),
        reported,
    });
    entry.reported |= reported;
    if state == "up" && entry.state == "down" {
        entry.state = "up".to_owned();
    }
}

/// A serializable struct of numbers as a name → value map.
fn numbers<T: Serialize>(value: &T) -> BTreeMap<String, u64> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::Object(fields)) => fields
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_u64()?)))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// This node's links, as its responder reports them.
fn links_report(node: &Node) -> LinksReport {
    LinksReport(
        node.peer_stats()
            .into_iter()
            .map(|p| LinkReport {
                peer: p.node.0,
                connected: p.connected,
                messages: p.messages_out + p.messages_in,
                rtt_us: p.rtt_micros.filter(|_| p.connected),
            })
            .collect(),
    )
}

/// The member of [`ADMIN_GROUP`] that answers other nodes' admin
/// endpoints; a task on the node's runtime, ended by [`Responder::stop`]
/// (or the node's shutdown, which closes its mailbox).
pub(crate) struct Responder {
    mailbox: Arc<Mailbox>,
}

impl Responder {
    pub(crate) fn start<R: Runtime>(node: &Reign<R>) -> Result<Responder, RegistryError> {
        for result in [
            reign_proto::register_type_named::<ViewQuery>("reign.admin.ViewQuery").map(|_| ()),
            reign_proto::register_type_named::<LinksReport>("reign.admin.LinksReport").map(|_| ()),
        ] {
            if let Err(e) = result {
                tracing::warn!(error = %e, "admin: peers' views are off");
            }
        }
        let (address, mailbox) = node.new_mailbox();
        node.join(ADMIN_GROUP, &address)?;
        let mailbox = Arc::new(mailbox);
        let serving = mailbox.clone();
        let me = node.node().clone();
        node.rt.spawn(async move {
            while let Ok(request) = serving.recv_request().await {
                let (_, responder) = request.into_parts();
                let _ = responder.reply(links_report(&me));
            }
        });
        Ok(Responder { mailbox })
    }

    pub(crate) fn stop(&self) {
        self.mailbox.close();
    }
}

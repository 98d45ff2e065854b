//! The subscription and lease of one instance's local tier (steps 1, 3 and
//! 5 of the protocol in the module docs of `local`): one background task
//! per tier, holding a dedicated pub/sub connection, that applies and
//! acknowledges invalidation messages and renews the registration. It ends
//! (and deregisters) when the tier is dropped.

use std::pin::Pin;
use std::sync::Weak;
use std::time::{Duration, Instant};

use std::sync::Arc;

use futures_core::Stream;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;

use super::LocalTier;
use super::scripts::{self, Drop as What, Keys};
use crate::error::CacheError;
use crate::store::cluster::ClusterStore;

/// What the task needs from Redis.
pub(crate) struct Wiring {
    pub link: Link,
    pub keys: Keys,
    pub op_timeout: Duration,
}

/// The Redis the tier runs its protocol on.
#[derive(Clone)]
pub(crate) enum Link {
    /// A single Redis: its client (for the dedicated subscription) and the
    /// store's multiplexed connection.
    Single(Arc<redis::Client>, ConnectionManager),
    /// A Redis Cluster: the store (its cluster connection, node addresses).
    Cluster(Arc<ClusterStore>),
}

impl Link {
    /// The connection the protocol's scripts run on.
    pub(crate) async fn conn(&self) -> Result<Conn, CacheError> {
        Ok(match self {
            Self::Single(_, conn) => Conn::Single(conn.clone()),
            Self::Cluster(store) => Conn::Cluster(store.connection().await?),
        })
    }

    /// A dedicated pub/sub connection: to the single Redis, or to the
    /// master that serves the registry's slot now.
    pub(crate) async fn pubsub(&self, registry: &str) -> Result<redis::aio::PubSub, CacheError> {
        Ok(match self {
            Self::Single(client, _) => client.get_async_pubsub().await?,
            Self::Cluster(store) => {
                let (host, port) = store.master_of(registry).await?;
                store.node_client(&host, port)?.get_async_pubsub().await?
            }
        })
    }
}

/// A connection for the protocol's scripts (`Lua::run` takes any
/// `ConnectionLike`): the single node's, or the cluster's, which routes
/// each script by its first key.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipe: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipe, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipe, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Why a session ended.
enum Ended {
    /// The tier was dropped.
    Closed,
    /// The subscription or the lease was lost: start again.
    Lost(&'static str),
}

/// Runs sessions until the tier is dropped.
pub(crate) async fn run(
    tier: Weak<LocalTier>,
    wiring: Wiring,
    mut closed: tokio::sync::oneshot::Receiver<()>,
) {
    const FIRST: Duration = Duration::from_millis(20);
    let mut pause = FIRST;
    // The id registered last, for the deregistration at the end.
    let mut current: Option<String> = None;
    loop {
        let ended = session(&tier, &wiring, &mut closed, &mut current).await;
        let registered = current.is_some();
        match ended {
            Ended::Closed => break,
            Ended::Lost(why) => {
                if let Some(t) = tier.upgrade() {
                    t.stop_serving();
                    t.set_id(None);
                }
                tracing::debug!(
                    why,
                    "local tier: session ended; not serving locally until it is back"
                );
                // It serves nothing locally now: no invalidation needs to
                // wait for its old registration.
                if let Some(id) = current.take() {
                    deregister(&wiring, &id).await;
                }
            }
        }
        if registered {
            pause = FIRST;
        }
        tokio::select! {
            _ = &mut closed => break,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(1));
    }
    if let Some(id) = current {
        deregister(&wiring, &id).await;
    }
}

/// Best effort: an instance that ends leaves the registry, so that no
/// invalidation waits for its lease.
async fn deregister(wiring: &Wiring, id: &str) {
    let _ = tokio::time::timeout(wiring.op_timeout, async {
        redis::cmd("ZREM")
            .arg(&wiring.keys.registry)
            .arg(id)
            .query_async::<i64>(&mut wiring.link.conn().await?)
            .await
            .map_err(CacheError::from)
    })
    .await;
}

/// Times out `fut` after the operation timeout, flattening both errors.
async fn bounded<T, E>(
    d: Duration,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Option<T> {
    tokio::time::timeout(d, fut).await.ok().and_then(Result::ok)
}

/// One subscription and registration, until either is lost.
async fn session(
    tier: &Weak<LocalTier>,
    wiring: &Wiring,
    closed: &mut tokio::sync::oneshot::Receiver<()>,
    current: &mut Option<String>,
) -> Ended {
    let s = scripts::scripts();
    let op = wiring.op_timeout;
    let lease = match tier.upgrade() {
        Some(t) => t.config.lease,
        None => return Ended::Closed,
    };
    let lease_ms = lease.as_millis().to_string();
    // Step 1: subscribe (confirmed), drop everything, register, serve.
    let Some(pubsub) = bounded(op, wiring.link.pubsub(&wiring.keys.registry)).await else {
        return Ended::Lost("cannot connect the subscription");
    };
    let (mut sink, stream) = pubsub.split();
    if bounded(op, sink.subscribe(&wiring.keys.channel))
        .await
        .is_none()
    {
        return Ended::Lost("cannot subscribe");
    }
    let mut stream = Box::pin(stream);
    let id = scripts::new_id();
    match tier.upgrade() {
        Some(t) => t.drop_all(),
        None => return Ended::Closed,
    }
    let Some(mut conn) = bounded(op, wiring.link.conn()).await else {
        return Ended::Lost("cannot connect");
    };
    *current = Some(id.clone());
    let sent = Instant::now();
    let reply: Option<i64> = bounded(
        op,
        s.register.run(
            &mut conn,
            &[&wiring.keys.registry],
            &[id.as_bytes(), lease_ms.as_bytes()],
        ),
    )
    .await;
    if reply != Some(1) {
        return Ended::Lost("cannot register");
    }
    match tier.upgrade() {
        Some(t) => {
            t.set_id(Some(id.clone()));
            t.serve_from(sent);
        }
        None => return Ended::Closed,
    }
    let period = lease / 4;
    let mut next_renewal = tokio::time::Instant::now() + period;
    // Acknowledgements in flight: each is sent once its message is applied
    // (step 3) and does not hold up the next message (under a burst of
    // invalidations one at a time queued them behind each other's round
    // trips). A failed one ends the session, as before.
    let mut acks: tokio::task::JoinSet<Option<i64>> = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut *closed => return Ended::Closed,
            Some(acked) = acks.join_next(), if !acks.is_empty() => {
                if !matches!(acked, Ok(Some(_))) {
                    return Ended::Lost("cannot acknowledge");
                }
            }
            msg = next(stream.as_mut()) => {
                let Some(msg) = msg else {
                    return Ended::Lost("subscription closed");
                };
                let msg = scripts::parse(msg.get_payload_bytes());
                // Step 3: apply, then acknowledge (and wake the invalidator
                // when it listens).
                match tier.upgrade() {
                    Some(t) => match &msg.drop {
                        What::Keys(keys) => t.floors.raise(keys.iter().map(String::as_str)),
                        What::All => t.drop_all(),
                    },
                    None => return Ended::Closed,
                }
                // Not this instance's own message: its invalidator applied
                // it (step 6) and does not wait for this registration.
                let own = msg.from.as_deref() == Some(id.as_str());
                if let Some(msg_id) = msg.id.filter(|_| !own) {
                    let life = (2 * lease).as_millis().to_string();
                    let reply = msg.reply.as_deref().map(|r| wiring.keys.reply_channel(r));
                    let ack_key = wiring.keys.ack(&msg_id);
                    let (mut conn, id) = (conn.clone(), id.clone());
                    acks.spawn(async move {
                        let mut args = vec![id.as_bytes(), life.as_bytes()];
                        if let Some(reply) = &reply {
                            args.extend([reply.as_bytes(), msg_id.as_bytes()]);
                        }
                        bounded(op, s.ack.run(&mut conn, &[&ack_key], &args)).await
                    });
                }
            }
            () = tokio::time::sleep_until(next_renewal) => {
                // Step 5: renew; a refused renewal means the lease ran out
                // or this id was evicted.
                let sent = Instant::now();
                let renewed: Option<i64> = bounded(
                    op,
                    s.renew.run(
                        &mut conn,
                        &[&wiring.keys.registry, &wiring.keys.evicted],
                        &[id.as_bytes(), lease_ms.as_bytes()],
                    ),
                )
                .await;
                match renewed {
                    Some(1) => match tier.upgrade() {
                        Some(t) => t.serve_from(sent),
                        None => return Ended::Closed,
                    },
                    Some(_) => return Ended::Lost("lease ran out or was evicted"),
                    // Not renewed: the deadline lapses by itself; try again.
                    None => {}
                }
                // The subscription must answer too (a half-open connection).
                if bounded(op, sink.ping::<redis::Value>()).await.is_none() {
                    return Ended::Lost("subscription does not answer");
                }
                next_renewal = tokio::time::Instant::now() + period;
            }
        }
    }
}

async fn next<S: Stream + ?Sized>(mut stream: Pin<&mut S>) -> Option<S::Item> {
    std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await
}

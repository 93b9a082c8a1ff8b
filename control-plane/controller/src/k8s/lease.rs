//! Leader election with a `coordination.k8s.io/v1` Lease: only the replica holding it writes
//! route status and Events ([`while_leading`]); every replica watches and serves xDS.
//!
//! Every [`LeaseSettings::renew_every`] each replica reads the Lease. The holder renews it
//! (`renewTime`); another replica takes it over once `renewTime + leaseDurationSeconds` has
//! passed; nobody holds a Lease that does not exist yet, so the first to create it does. Every
//! write carries the `resourceVersion` read, so of two replicas racing for it one gets a 409
//! Conflict and stays a follower. A replica that cannot reach the API server steps down.
//! Expiry is judged on the Lease's `renewTime` against the local clock, so the replicas'
//! clocks must agree to well within the lease duration.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::snapshot::Snapshot;

/// The default name of the Lease.
pub const DEFAULT_LEASE_NAME: &str = "lanyard-controller";
/// The default lease duration.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);

/// Which Lease, who this replica is, and how long a lease lasts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica's `holderIdentity` (unique among replicas: the pod name).
    pub identity: String,
    /// `leaseDurationSeconds`: how long after its last renewal a lease may be taken over.
    pub duration: Duration,
}

impl LeaseSettings {
    /// How often the holder renews, and followers look: a third of the duration.
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }
}

/// What a replica does with the Lease it read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// It holds it: renew.
    Renew,
    /// Nobody (valid) holds it: take it.
    Acquire,
    /// Another replica holds it.
    Follow,
}

/// The decision for a Lease's spec (`None`: the Lease does not exist yet).
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => Decision::Acquire,
        Some(holder) if holder == identity => Decision::Renew,
        Some(_) => {
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
            let expired = spec
                .renew_time
                .as_ref()
                .is_none_or(|renewed| renewed.0 + SignedDuration::from_secs(duration) < now);
            if expired {
                Decision::Acquire
            } else {
                Decision::Follow
            }
        }
    }
}

/// Takes part in the election until aborted, telling `leader` whether this replica leads.
pub async fn run(client: Client, settings: LeaseSettings, leader: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    loop {
        let leading = match try_once(&api, &settings).await {
            Ok(leading) => leading,
            Err(e) => {
                warn!(lease = %settings.name, error = %e, "cannot read or write the Lease: not leading");
                false
            }
        };
        leader.send_if_modified(|was| {
            if *was == leading {
                return false;
            }
            if leading {
                info!(identity = %settings.identity, "leading: writing route status");
            } else {
                info!(identity = %settings.identity, "following: another replica writes route status");
            }
            *was = leading;
            true
        });
        tokio::time::sleep(settings.renew_every()).await;
    }
}

/// One round: read the Lease, renew or take it if due. Whether this replica holds it now.
async fn try_once(api: &Api<Lease>, settings: &LeaseSettings) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let current = api.get_opt(&settings.name).await?;
    let decision = decide(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        &settings.identity,
        now,
    );
    let duration = i32::try_from(settings.duration.as_secs()).unwrap_or(i32::MAX);
    let result = match (decision, current) {
        (Decision::Follow, _) => return Ok(false),
        (_, None) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(settings.name.clone()),
                    namespace: Some(settings.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(settings.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await
        }
        (decision, Some(mut lease)) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            spec.renew_time = Some(MicroTime(now));
            spec.lease_duration_seconds = Some(duration);
            if decision == Decision::Acquire {
                spec.holder_identity = Some(settings.identity.clone());
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            // The resourceVersion read makes a concurrent write a conflict.
            api.replace(&settings.name, &PostParams::default(), &lease)
                .await
        }
    };
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// How long to wait before trying again work that failed for a snapshot.
pub const RETRY_FAILED: Duration = Duration::from_secs(5);

/// Work done with every snapshot by the replica holding the Lease (route status, Events).
pub trait LeaderWork: Send {
    /// Does the work for one snapshot (never a placeholder); `false` when some of it failed
    /// and is to be tried again after [`RETRY_FAILED`].
    fn handle(&mut self, snapshot: &Snapshot) -> impl Future<Output = bool> + Send;
    /// Another replica leads: forget what was done, so that all of it is checked again
    /// when this one leads.
    fn forget(&mut self);
    /// Resolves when the work has something new to do for the same snapshot (what proxies
    /// reject changed); never, by default.
    fn woken(&mut self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
}

/// Runs `work` on every snapshot while `leader` says this replica leads; until the
/// snapshots or the election end.
pub async fn while_leading(
    mut work: impl LeaderWork,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    mut leader: watch::Receiver<bool>,
) {
    let mut failed = false;
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        if *leader.borrow_and_update() {
            if !snapshot.is_placeholder() {
                failed = !work.handle(&snapshot).await;
            }
        } else {
            work.forget();
            failed = false;
        }
        tokio::select! {
            changed = snapshots.changed() => if changed.is_err() { return },
            changed = leader.changed() => if changed.is_err() { return },
            () = work.woken() => {}
            () = tokio::time::sleep(RETRY_FAILED), if failed => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_spec(holder: &str, renewed: Timestamp, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_string()),
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(seconds),
            ..Default::default()
        }
    }

    #[test]
    fn the_holder_renews_others_follow_until_it_expires() {
        let now = Timestamp::now();
        assert_eq!(decide(None, "a", now), Decision::Acquire);
        assert_eq!(
            decide(Some(&LeaseSpec::default()), "a", now),
            Decision::Acquire
        );
        let fresh = mk_spec("a", now - SignedDuration::from_secs(5), 15);
        assert_eq!(decide(Some(&fresh), "a", now), Decision::Renew);
        assert_eq!(decide(Some(&fresh), "b", now), Decision::Follow);
        let stale = mk_spec("a", now - SignedDuration::from_secs(16), 15);
        assert_eq!(decide(Some(&stale), "b", now), Decision::Acquire);
        assert_eq!(decide(Some(&stale), "a", now), Decision::Renew);
    }

    #[test]
    fn renewal_is_a_third_of_the_duration() {
        let settings = LeaseSettings {
            namespace: "default".into(),
            name: DEFAULT_LEASE_NAME.into(),
            identity: "a".into(),
            duration: Duration::from_secs(15),
        };
        assert_eq!(settings.renew_every(), Duration::from_secs(5));
    }
}

//! Leader election with a `coordination.k8s.io/v1` Lease: only the replica holding it writes
//! route status and Events ([`while_leading`]); every replica watches and serves xDS.
//!
//! It follows client-go's leader election (`tools/leaderelection/leaderelection.go`:
//! `tryAcquireOrRenew`, `renew`, `release`, `isLeaseValid`; read at kubernetes/client-go
//! 32ce75a, July 2026):
//!
//! - Every [`LeaseSettings::retry_period`] each replica reads the Lease. The holder renews it;
//!   nobody holds a Lease that does not exist yet or has no holder, so the first to write it
//!   takes it. Every write carries the `resourceVersion` read, so of two replicas racing for
//!   it one gets a 409 Conflict.
//! - **Expiry is measured on the local clock** ([`Elector`]): a replica notes the local time at
//!   which it last saw the Lease's spec change, and takes the Lease over once
//!   `leaseDurationSeconds` have passed on its own clock since then with no change (client-go's
//!   `observedTime`). The `renewTime` written is never compared with a local clock, so any
//!   offset between the replicas' clocks is tolerated, and a replica that has just started
//!   waits a whole lease duration before taking a Lease someone holds. What is tolerated only
//!   within bounds is a difference in clock *rate*: the holder stops leading
//!   [`LeaseSettings::renew_deadline`] after the start of its last successful renewal, a
//!   follower waits [`LeaseSettings::duration`] after seeing it, so there are never two
//!   leaders as long as no replica's clock runs more than duration / deadline = 1.5 times as
//!   fast as another's (client-go's LeaseDuration / RenewDeadline ratio).
//! - **A renew deadline**: a round that hangs (the kube client has no read timeout and retries
//!   429 and 503) is abandoned when the deadline passes and leadership ends there, as in
//!   client-go's `renew` (`PollUntilContextTimeout(RetryPeriod, RenewDeadline)`);
//!   [`while_leading`] then cancels a write pass under way. A failed round is tried again every
//!   retry period until the deadline.
//! - **Release on shutdown** (client-go's `ReleaseOnCancel`, `tryRelease`): on SIGTERM the
//!   holder stops leading, then writes the Lease with no holder and `leaseDurationSeconds: 1`,
//!   so another replica takes it at its next look instead of a lease duration later.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;
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
    /// `leaseDurationSeconds`: how long after a Lease was last seen to change it may be
    /// taken over.
    pub duration: Duration,
}

impl LeaseSettings {
    /// How long the holder keeps leading after the start of its last successful renewal:
    /// two thirds of the duration (client-go's defaults are 10 s of 15 s).
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// How often the holder renews, and followers look: 2/15 of the duration (client-go's
    /// defaults are 2 s of 15 s).
    pub fn retry_period(&self) -> Duration {
        self.duration * 2 / 15
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

/// One replica's view of the election, on its local clock: the Lease spec last seen and when
/// it was first seen so, and the start of the last round that renewed or took the Lease.
#[derive(Clone, Debug)]
pub struct Elector {
    settings: LeaseSettings,
    observed: Option<(LeaseSpec, Instant)>,
    renewed: Option<Instant>,
}

impl Elector {
    pub fn new(settings: LeaseSettings) -> Self {
        Self {
            settings,
            observed: None,
            renewed: None,
        }
    }

    /// Notes the Lease's spec (`None`: no Lease) as read at `now`: the time it changes is
    /// what expiry is measured from.
    pub fn observe(&mut self, spec: Option<&LeaseSpec>, now: Instant) {
        let spec = spec.cloned().unwrap_or_default();
        if self.observed.as_ref().is_none_or(|(seen, _)| *seen != spec) {
            self.observed = Some((spec, now));
        }
    }

    /// The decision for a Lease's spec (`None`: the Lease does not exist yet), observed
    /// before with [`Elector::observe`].
    pub fn decide(&self, spec: Option<&LeaseSpec>, now: Instant) -> Decision {
        let Some(spec) = spec else {
            return Decision::Acquire;
        };
        match spec.holder_identity.as_deref() {
            None | Some("") => Decision::Acquire,
            Some(holder) if holder == self.settings.identity => Decision::Renew,
            Some(_) => {
                let seconds = spec.lease_duration_seconds.unwrap_or(0);
                let duration = Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
                let seen = self
                    .observed
                    .as_ref()
                    .filter(|(seen, _)| seen == spec)
                    .map_or(now, |(_, at)| *at);
                if seen + duration < now {
                    Decision::Acquire
                } else {
                    Decision::Follow
                }
            }
        }
    }

    /// This replica wrote the Lease as `spec` in a round that began at `started`.
    pub fn renewed(&mut self, spec: Option<&LeaseSpec>, started: Instant) {
        self.observed = Some((spec.cloned().unwrap_or_default(), started));
        self.renewed = Some(started);
    }

    /// Another replica holds the Lease, or this one released it.
    pub fn step_down(&mut self) {
        self.renewed = None;
    }

    /// Until when this replica leads without another successful renewal.
    pub fn leading_until(&self) -> Option<Instant> {
        self.renewed.map(|at| at + self.settings.renew_deadline())
    }

    /// Whether this replica leads at `now`.
    pub fn is_leading(&self, now: Instant) -> bool {
        self.leading_until().is_some_and(|until| now < until)
    }
}

/// The calls on the Lease the election makes: the API server's ([`KubeLease`]), or a test's.
pub trait LeaseApi: Send + Sync {
    /// The Lease, `None` when it does not exist.
    fn get(&self) -> impl Future<Output = Result<Option<Lease>, kube::Error>> + Send;
    fn create(&self, lease: &Lease) -> impl Future<Output = Result<Lease, kube::Error>> + Send;
    /// Replaces it, with the `resourceVersion` the Lease carries as precondition.
    fn replace(&self, lease: &Lease) -> impl Future<Output = Result<Lease, kube::Error>> + Send;
}

/// The Lease on the API server.
pub struct KubeLease {
    api: Api<Lease>,
    name: String,
}

impl KubeLease {
    pub fn new(client: Client, settings: &LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            name: settings.name.clone(),
        }
    }
}

impl LeaseApi for KubeLease {
    async fn get(&self) -> Result<Option<Lease>, kube::Error> {
        self.api.get_opt(&self.name).await
    }

    async fn create(&self, lease: &Lease) -> Result<Lease, kube::Error> {
        self.api.create(&PostParams::default(), lease).await
    }

    async fn replace(&self, lease: &Lease) -> Result<Lease, kube::Error> {
        self.api
            .replace(&self.name, &PostParams::default(), lease)
            .await
    }
}

/// Takes part in the election, telling `leader` whether this replica leads, until
/// `shutdown` turns true: then it stops leading and releases the Lease if it holds it
/// (within a renew deadline), and returns.
pub async fn run(
    api: impl LeaseApi,
    settings: LeaseSettings,
    leader: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut elector = Elector::new(settings.clone());
    let publish = |leading: bool| {
        leader.send_if_modified(|was| {
            if *was == leading {
                return false;
            }
            if leading {
                info!(identity = %settings.identity, "leading: writing route status");
            } else {
                info!(identity = %settings.identity, "not leading: another replica writes route status");
            }
            *was = leading;
            true
        });
    };
    loop {
        let started = Instant::now();
        // A round may not outlast the leadership it renews.
        let budget = match elector.leading_until() {
            Some(until) if until > started => until - started,
            _ => settings.renew_deadline(),
        };
        let round = tokio::select! {
            round = tokio::time::timeout(budget, try_once(&api, &mut elector, &settings, started)) => round,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        match round {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(lease = %settings.name, error = %e, "cannot read or write the Lease");
            }
            Err(_) => warn!(lease = %settings.name, ?budget, "no answer about the Lease in time"),
        }
        let now = Instant::now();
        if !elector.is_leading(now) {
            elector.step_down();
        }
        publish(elector.is_leading(now));
        // Look again after a retry period, or when leadership would lapse if sooner.
        let mut wait = settings.retry_period();
        if let Some(until) = elector.leading_until() {
            wait = wait.min(until.saturating_duration_since(now));
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    publish(false);
    match tokio::time::timeout(settings.renew_deadline(), release(&api, &settings)).await {
        Ok(Ok(true)) => info!(lease = %settings.name, "released the Lease"),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => warn!(lease = %settings.name, error = %e, "cannot release the Lease"),
        Err(_) => warn!(lease = %settings.name, "no answer releasing the Lease in time"),
    }
}

/// One round: read the Lease, renew or take it if due (client-go's `tryAcquireOrRenew`).
async fn try_once(
    api: &impl LeaseApi,
    elector: &mut Elector,
    settings: &LeaseSettings,
    started: Instant,
) -> Result<(), kube::Error> {
    let current = api.get().await?;
    let now = Instant::now();
    let spec = current.as_ref().and_then(|l| l.spec.as_ref());
    elector.observe(spec, now);
    let decision = elector.decide(spec, now);
    let wall = Timestamp::now();
    let duration = i32::try_from(settings.duration.as_secs()).unwrap_or(i32::MAX);
    let result = match (decision, current) {
        (Decision::Follow, _) => {
            elector.step_down();
            return Ok(());
        }
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
                    acquire_time: Some(MicroTime(wall)),
                    renew_time: Some(MicroTime(wall)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            api.create(&lease).await
        }
        (decision, Some(mut lease)) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            spec.renew_time = Some(MicroTime(wall));
            spec.lease_duration_seconds = Some(duration);
            if decision == Decision::Acquire {
                spec.holder_identity = Some(settings.identity.clone());
                spec.acquire_time = Some(MicroTime(wall));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            // The resourceVersion read makes a concurrent write a conflict.
            api.replace(&lease).await
        }
    };
    match result {
        Ok(lease) => {
            elector.renewed(lease.spec.as_ref(), started);
            Ok(())
        }
        // Another replica wrote first: the next round reads who.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up if this replica holds it: no holder, `leaseDurationSeconds: 1`, so that
/// another replica takes it at once (client-go's `tryRelease`). Whether it was released.
async fn release(api: &impl LeaseApi, settings: &LeaseSettings) -> Result<bool, kube::Error> {
    // A conflict means a write of ours raced the read (client-go retries too).
    for _ in 0..3 {
        let Some(mut lease) = api.get().await? else {
            return Ok(false);
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
            return Ok(false);
        }
        let now = Timestamp::now();
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(now));
        spec.acquire_time = Some(MicroTime(now));
        match api.replace(&lease).await {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// How long to wait before trying again work that failed for a snapshot.
pub const RETRY_FAILED: Duration = Duration::from_secs(5);

/// Work done with every snapshot by the replica holding the Lease (route status, Events).
pub trait LeaderWork: Send {
    /// Does the work for one snapshot (never a placeholder); `false` when some of it failed
    /// and is to be tried again after [`RETRY_FAILED`].
    fn handle(&mut self, snapshot: &Arc<Snapshot>) -> impl Future<Output = bool> + Send;
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
                // Leadership may end during the pass (a renewal that did not succeed by the
                // deadline): the writes not yet made are not made (client-go cancels the
                // context OnStartedLeading got).
                let mut lost = leader.clone();
                tokio::select! {
                    done = work.handle(&snapshot) => failed = !done,
                    _ = lost.wait_for(|leading| !*leading) => {
                        info!("leadership lost: the write pass under way is cancelled");
                        continue;
                    }
                }
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
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use k8s_openapi::jiff::SignedDuration;
    use kube::core::Status;

    use super::*;

    fn mk_settings(identity: &str, seconds: u64) -> LeaseSettings {
        LeaseSettings {
            namespace: "default".into(),
            name: DEFAULT_LEASE_NAME.into(),
            identity: identity.into(),
            duration: Duration::from_secs(seconds),
        }
    }

    fn mk_spec(holder: &str, renewed: Timestamp, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_string()),
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(seconds),
            ..Default::default()
        }
    }

    #[test]
    fn the_holder_renews_others_follow_and_nobody_holds_a_missing_or_released_lease() {
        let now = Instant::now();
        let elector = Elector::new(mk_settings("a", 15));
        assert_eq!(elector.decide(None, now), Decision::Acquire);
        assert_eq!(
            elector.decide(Some(&LeaseSpec::default()), now),
            Decision::Acquire
        );
        let held = mk_spec("a", Timestamp::now(), 15);
        assert_eq!(elector.decide(Some(&held), now), Decision::Renew);
        let mut other = Elector::new(mk_settings("b", 15));
        other.observe(Some(&held), now);
        assert_eq!(other.decide(Some(&held), now), Decision::Follow);
    }

    #[test]
    fn expiry_is_measured_on_the_local_clock_from_the_last_change_seen() {
        let start = Instant::now();
        let secs = Duration::from_secs;
        let mut elector = Elector::new(mk_settings("b", 15));
        // The holder's clock is an hour behind: its renewTime says nothing about expiry.
        let wall = Timestamp::now() - SignedDuration::from_hours(1);
        let first = mk_spec("a", wall, 15);
        elector.observe(Some(&first), start);
        assert_eq!(elector.decide(Some(&first), start), Decision::Follow);
        // Renewed at +10 s (seen changed): valid until +25 s on this clock.
        let second = mk_spec("a", wall + SignedDuration::from_secs(10), 15);
        elector.observe(Some(&second), start + secs(10));
        for at in [11, 20, 25] {
            elector.observe(Some(&second), start + secs(at));
            assert_eq!(
                elector.decide(Some(&second), start + secs(at)),
                Decision::Follow,
                "at +{at} s"
            );
        }
        elector.observe(Some(&second), start + secs(26));
        assert_eq!(
            elector.decide(Some(&second), start + secs(26)),
            Decision::Acquire
        );
        // An hour ahead instead: still taken over once 15 s pass without a change.
        let mut elector = Elector::new(mk_settings("b", 15));
        let ahead = mk_spec("a", Timestamp::now() + SignedDuration::from_hours(1), 15);
        elector.observe(Some(&ahead), start);
        assert_eq!(
            elector.decide(Some(&ahead), start + secs(15)),
            Decision::Follow
        );
        assert_eq!(
            elector.decide(Some(&ahead), start + secs(16)),
            Decision::Acquire
        );
    }

    #[test]
    fn leadership_lasts_a_renew_deadline_from_the_start_of_the_last_renewal() {
        let start = Instant::now();
        let mut elector = Elector::new(mk_settings("a", 15));
        assert!(!elector.is_leading(start));
        elector.renewed(Some(&mk_spec("a", Timestamp::now(), 15)), start);
        assert!(elector.is_leading(start + Duration::from_millis(9_999)));
        assert!(!elector.is_leading(start + Duration::from_secs(10)));
        elector.step_down();
        assert!(!elector.is_leading(start));
    }

    #[test]
    fn the_timings_keep_client_go_s_constraints() {
        // client-go's NewLeaderElector: LeaseDuration > RenewDeadline > 1.2 RetryPeriod.
        for seconds in [1, 2, 3, 15, 60] {
            let settings = mk_settings("a", seconds);
            assert!(settings.renew_deadline() < settings.duration);
            assert!(settings.retry_period().mul_f64(1.2) < settings.renew_deadline());
        }
        let settings = mk_settings("a", 15);
        assert_eq!(settings.renew_deadline(), Duration::from_secs(10));
        assert_eq!(settings.retry_period(), Duration::from_secs(2));
    }

    /// A Lease held in memory, whose calls can be made to hang.
    #[derive(Default)]
    struct FakeLease {
        lease: Mutex<Option<Lease>>,
        version: AtomicUsize,
        stalled: AtomicBool,
    }

    impl FakeLease {
        async fn answer(&self) {
            if self.stalled.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
        }

        fn store(&self, mut lease: Lease) -> Lease {
            let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
            lease.metadata.resource_version = Some(version.to_string());
            *self.lease.lock().unwrap() = Some(lease.clone());
            lease
        }

        fn spec(&self) -> LeaseSpec {
            let lease = self.lease.lock().unwrap().clone();
            lease.and_then(|l| l.spec).unwrap_or_default()
        }
    }

    fn conflict() -> kube::Error {
        kube::Error::Api(
            Status::failure("conflict", "Conflict")
                .with_code(409)
                .boxed(),
        )
    }

    impl LeaseApi for Arc<FakeLease> {
        async fn get(&self) -> Result<Option<Lease>, kube::Error> {
            self.answer().await;
            Ok(self.lease.lock().unwrap().clone())
        }

        async fn create(&self, lease: &Lease) -> Result<Lease, kube::Error> {
            self.answer().await;
            if self.lease.lock().unwrap().is_some() {
                return Err(conflict());
            }
            Ok(self.store(lease.clone()))
        }

        async fn replace(&self, lease: &Lease) -> Result<Lease, kube::Error> {
            self.answer().await;
            let current = self.lease.lock().unwrap().clone();
            if current.and_then(|l| l.metadata.resource_version) != lease.metadata.resource_version
            {
                return Err(conflict());
            }
            Ok(self.store(lease.clone()))
        }
    }

    /// Waits (on the paused clock) until `leader` says `leading`; how long it took.
    async fn wait_leading(leader: &mut watch::Receiver<bool>, leading: bool) -> Duration {
        let start = Instant::now();
        tokio::time::timeout(Duration::from_secs(120), leader.wait_for(|l| *l == leading))
            .await
            .expect("in time")
            .expect("the election runs");
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_that_hangs_ends_leadership_by_the_renew_deadline() {
        let api = Arc::new(FakeLease::default());
        let settings = mk_settings("a", 15);
        let (leading, mut leader) = watch::channel(false);
        let (_stop, shutdown) = watch::channel(false);
        tokio::spawn(run(api.clone(), settings.clone(), leading, shutdown));
        wait_leading(&mut leader, true).await;
        assert_eq!(api.spec().holder_identity.as_deref(), Some("a"));
        // Renewals go on: still leading well past a lease duration.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(*leader.borrow());
        // From now on, every call hangs: leadership ends within the deadline of the last
        // renewal, long before another replica could take the Lease (15 s after seeing it).
        api.stalled.store(true, Ordering::SeqCst);
        let took = wait_leading(&mut leader, false).await;
        assert!(took <= settings.renew_deadline(), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_releases_the_lease_for_another_replica_to_take_at_once() {
        let api = Arc::new(FakeLease::default());
        let (leading, mut leader) = watch::channel(false);
        let (stop, shutdown) = watch::channel(false);
        let election = tokio::spawn(run(api.clone(), mk_settings("a", 15), leading, shutdown));
        wait_leading(&mut leader, true).await;
        stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(1), election)
            .await
            .expect("the election ends at once")
            .unwrap();
        assert!(!*leader.borrow());
        let spec = api.spec();
        assert_eq!(spec.holder_identity, None);
        assert_eq!(spec.lease_duration_seconds, Some(1));
        // Another replica seeing it for the first time takes it without waiting.
        let (leading, mut leader) = watch::channel(false);
        let (_stop, shutdown) = watch::channel(false);
        tokio::spawn(run(api.clone(), mk_settings("b", 15), leading, shutdown));
        let took = wait_leading(&mut leader, true).await;
        assert!(took < Duration::from_secs(1), "{took:?}");
        assert_eq!(api.spec().holder_identity.as_deref(), Some("b"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_takes_over_a_lease_duration_after_renewals_stop() {
        let api = Arc::new(FakeLease::default());
        // Held by a replica that is gone, its renewTime from a clock far ahead.
        let future = Timestamp::now() + SignedDuration::from_hours(1);
        api.store(Lease {
            metadata: ObjectMeta::default(),
            spec: Some(mk_spec("gone", future, 15)),
        });
        let (leading, mut leader) = watch::channel(false);
        let (_stop, shutdown) = watch::channel(false);
        tokio::spawn(run(api.clone(), mk_settings("b", 15), leading, shutdown));
        let took = wait_leading(&mut leader, true).await;
        assert!(
            took > Duration::from_secs(15) && took < Duration::from_secs(18),
            "{took:?}"
        );
    }

    /// Leader work whose passes never end, counting the passes begun, dropped and forgets.
    #[derive(Clone, Default)]
    struct Hanging {
        begun: Arc<AtomicUsize>,
        dropped: Arc<AtomicUsize>,
        forgotten: Arc<AtomicUsize>,
    }

    struct OnDrop(Arc<AtomicUsize>);

    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl LeaderWork for Hanging {
        async fn handle(&mut self, _: &Arc<Snapshot>) -> bool {
            self.begun.fetch_add(1, Ordering::SeqCst);
            let _guard = OnDrop(self.dropped.clone());
            std::future::pending::<bool>().await
        }

        fn forget(&mut self) {
            self.forgotten.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_pass_under_way_is_cancelled_when_leadership_ends() {
        let work = Hanging::default();
        let snapshot = Snapshot::translate(1, Default::default(), &Default::default());
        let (_snapshots, receiver) = watch::channel(Arc::new(snapshot));
        let (leading, leader) = watch::channel(true);
        tokio::spawn(while_leading(work.clone(), receiver, leader));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(work.begun.load(Ordering::SeqCst), 1);
        let forgotten = work.forgotten.load(Ordering::SeqCst);
        leading.send_replace(false);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(work.dropped.load(Ordering::SeqCst), 1, "the pass goes on");
        assert_eq!(work.forgotten.load(Ordering::SeqCst), forgotten + 1);
    }
}

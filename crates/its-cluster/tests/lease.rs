//! The leader lease against a real nats-server: one leader at a time, takeover after the
//! leader stops renewing, the deposed leader learns it, and its assignments are fenced off.

use std::time::Duration;

use its_cluster::{FenceFilter, FenceVerdict, LeaderElector, Role};
use its_testkit::{TestNats, within};

const TTL: Duration = Duration::from_millis(600);

#[tokio::test]
async fn one_leader_takeover_and_fencing() {
    let nats = TestNats::start();
    let bus = nats.bus().await;
    let mut a = within(10, "elector a", LeaderElector::new(&bus, "a", TTL))
        .await
        .unwrap();
    let mut b = within(10, "elector b", LeaderElector::new(&bus, "b", TTL))
        .await
        .unwrap();

    let Role::Leader { fence: old } = within(10, "a leads", a.tick()).await.unwrap() else {
        panic!("first contender must lead");
    };
    let role = within(10, "b follows", b.tick()).await.unwrap();
    assert_eq!(
        role,
        Role::Follower {
            leader: Some("a".into()),
            fence: old
        }
    );
    // a renews within its term: the fencing token stays
    let Role::Leader { fence: renewed } = within(10, "a renews", a.tick()).await.unwrap() else {
        panic!("a must keep the lease");
    };
    assert_eq!(renewed, old);
    assert!(matches!(
        within(10, "b follows", b.tick()).await.unwrap(),
        Role::Follower { .. }
    ));

    // a stops renewing; b takes over once the ttl has passed without a new revision
    let new = within(10, "b takes over", async {
        loop {
            if let Role::Leader { fence } = b.tick().await.unwrap() {
                return fence;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(new > renewed);

    // the deposed leader learns it on its next tick
    assert!(matches!(
        within(10, "a deposed", a.tick()).await.unwrap(),
        Role::Follower { leader: Some(l), fence } if l == "b" && fence == new
    ));

    // a node that has seen the new lease ignores what a wrote under its old one
    let mut filter = FenceFilter::new();
    filter.observe_lease(new);
    assert_eq!(filter.judge(renewed), FenceVerdict::Stale);
    assert_eq!(filter.judge(new), FenceVerdict::Obey);

    // resigning frees the lease at once
    within(10, "b resigns", b.resign()).await.unwrap();
    assert!(matches!(
        within(10, "a leads again", a.tick()).await.unwrap(),
        Role::Leader { .. }
    ));
}

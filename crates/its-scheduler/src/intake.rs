//! Frame intake: reads `its.frames.*`, checks each envelope, and hands good frames to the
//! scheduler. Every message read is counted.

use std::time::Instant;

use actix::Addr;
use futures::StreamExt;
use its_bus::Subscriber;
use its_proto::{DropReason, decode_frame, subjects};
use tokio::sync::oneshot;

use crate::{Accounting, Enqueue, SchedulerActor};

/// Runs until `stop` fires (then drains the subscription: messages already on their way are
/// still read and counted) or the subscription ends.
pub async fn run_intake(
    mut sub: Subscriber,
    scheduler: Addr<SchedulerActor>,
    acct: Accounting,
    max_frame_bytes: usize,
    stop: oneshot::Receiver<()>,
) {
    let mut stop = Some(stop);
    loop {
        let msg = match stop.as_mut() {
            Some(s) => tokio::select! {
                m = sub.next() => m,
                _ = s => {
                    stop = None;
                    if let Err(e) = sub.drain().await {
                        tracing::warn!(error = %e, "cannot drain the frame subscription");
                        break;
                    }
                    continue;
                }
            },
            None => sub.next().await,
        };
        let Some(msg) = msg else { break };
        acct.received();
        let received_at = Instant::now();
        match decode_frame(&msg.payload, msg.subject.as_str(), max_frame_bytes) {
            Err(e) => acct.dropped(
                subjects::last_token(msg.subject.as_str()),
                None,
                e.drop_reason(),
                e.to_string(),
            ),
            Ok(frame) => {
                let (camera, seq) = (frame.camera_id.clone(), frame.seq);
                if scheduler
                    .send(Enqueue { frame, received_at })
                    .await
                    .is_err()
                {
                    acct.dropped(
                        &camera,
                        Some(seq),
                        DropReason::Shutdown,
                        "scheduler has stopped".into(),
                    );
                }
            }
        }
    }
    tracing::info!("frame intake stopped");
}

//! Every message a peer can send: the first byte picks an actor's message enum, the next
//! byte the length of a variant name, then the name, and the rest is the payload. Decoding
//! must give a message or an error, never a panic. Payload types are also decoded
//! directly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ractor::message::SerializedMessage;
use ractor::{BytesConvertable, Message};
use troupe_runtime::protocol::*;
use troupe_runtime::wire::Wire;

const VARIANTS: &[&str] = &[
    "Submit", "Status", "Watch", "StepFinished", "Spawn", "Cancel", "Resume", "JobEnded",
    "NodeDown", "Invalidate", "Request", "Executed", "Run", "CallReply", "Hello", "ListNodes",
    "Session", "Tick", "Event", "Publish", "Subscribe", "Forward", "ListJobs",
    "ListClusterJobs", "Renew", "Spec", "Report",
];

fn message<M: Message>(variant: String, args: Vec<u8>, call: bool) {
    let msg = if call {
        let (tx, _rx) = tokio::sync::oneshot::channel();
        SerializedMessage::Call {
            variant,
            args,
            reply: tx.into(),
            metadata: None,
        }
    } else {
        SerializedMessage::Cast {
            variant,
            args,
            metadata: None,
        }
    };
    let _ = M::deserialize(msg);
}

fn payloads(bytes: &[u8]) {
    let b = || bytes.to_vec();
    let _ = Wire::<SubmitRequest>::from_bytes(b()).into_inner();
    let _ = Wire::<StepRequest>::from_bytes(b()).into_inner();
    let _ = Wire::<StepResult>::from_bytes(b()).into_inner();
    let _ = Wire::<SpawnRequest>::from_bytes(b()).into_inner();
    let _ = Wire::<CallReply>::from_bytes(b()).into_inner();
    let _ = Wire::<NodeInfo>::from_bytes(b()).into_inner();
    let _ = Wire::<Executed>::from_bytes(b()).into_inner();
    let _ = Wire::<troupe_runtime::JobStatus>::from_bytes(b()).into_inner();
    let _ = Wire::<troupe_runtime::JobEvent>::from_bytes(b()).into_inner();
    let _ = Wire::<Vec<troupe_runtime::observe::ClusterEvent>>::from_bytes(b()).into_inner();
    let _ = Wire::<troupe_runtime::observe::JobsPage>::from_bytes(b()).into_inner();
}

/// A node decodes inside its tokio runtime (decoding an rpc spawns the reply's bridge).
///
/// ractor's derived decoder reads a raw `String` field with an `unwrap` (`BytesConvertable
/// for String`) inside its own `catch_unwind`, so a node given invalid UTF-8 there drops
/// the message as undecodable and runs on. libFuzzer's panic hook would abort on that
/// caught panic; the default hook is put back, so that only a panic that escapes (one a
/// node would die of) fails the run. (Fields still raw `String`: moving them into `Wire`
/// would end even the caught panic.)
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        let _ = std::panic::take_hook();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let _rt = runtime().enter();
    payloads(data);
    let [which, len, rest @ ..] = data else {
        return;
    };
    let n = (*len as usize).min(rest.len());
    let (name, args) = rest.split_at(n);
    // Mostly real variant names, so the decoder gets past the name.
    let variant = if name.len() == 1 {
        VARIANTS[name[0] as usize % VARIANTS.len()].to_string()
    } else {
        String::from_utf8_lossy(name).into_owned()
    };
    let call = which & 0x80 != 0;
    let args = args.to_vec();
    match which % 7 {
        0 => message::<JobManagerMessage>(variant, args, call),
        1 => message::<WorkerPoolMessage>(variant, args, call),
        2 => message::<MembershipMessage>(variant, args, call),
        3 => message::<MergerMessage>(variant, args, call),
        4 => message::<WatcherMessage>(variant, args, call),
        5 => message::<GearmanAdminMessage>(variant, args, call),
        _ => message::<EventHubMessage>(variant, args, call),
    }
});

//! A second host for tests that need a peer that is not loopback: a network namespace
//! (`ip netns`) joined to this one by a veth pair on a /30 of its own. A server started in
//! it may listen on every interface (`0.0.0.0`) without being reachable from outside this
//! machine, and a client on this side reaches it from `host_ip`, an address that is not
//! loopback. Needs root (the test command runs as root) and iproute2; removed on drop.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static CREATED: AtomicU32 = AtomicU32::new(0);

pub struct NetNs {
    pub name: String,
    /// This side's end of the veth pair.
    pub host_ip: Ipv4Addr,
    /// The namespace's end: where a server inside it is reached.
    pub inner_ip: Ipv4Addr,
    host_link: String,
}

/// Runs `ip ARGS`; panics with its stderr when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {} (network namespaces need root and iproute2)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl NetNs {
    pub fn new() -> NetNs {
        // One /30 per namespace, from the process id and a counter, in 10.213.0.0/16.
        let id = (std::process::id() * 8 + CREATED.fetch_add(1, Ordering::Relaxed)) % 16_384;
        let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + id * 4;
        let ns = NetNs {
            name: format!("ferrite-t{id}"),
            host_ip: Ipv4Addr::from(base + 1),
            inner_ip: Ipv4Addr::from(base + 2),
            host_link: format!("fth{id}"),
        };
        ns.create(&format!("ftn{id}"));
        ns
    }

    fn create(&self, inner_link: &str) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        ip(&["netns", "add", &self.name]);
        ip(&["link", "add", &self.host_link, "type", "veth", "peer", "name", inner_link]);
        ip(&["link", "set", inner_link, "netns", &self.name]);
        ip(&["addr", "add", &format!("{}/30", self.host_ip), "dev", &self.host_link]);
        ip(&["link", "set", &self.host_link, "up"]);
        let inside = |args: &[&str]| ip(&[&["netns", "exec", &self.name, "ip"][..], args].concat());
        inside(&["addr", "add", &format!("{}/30", self.inner_ip), "dev", inner_link]);
        inside(&["link", "set", inner_link, "up"]);
        inside(&["link", "set", "lo", "up"]);
    }

    /// `program` to run inside the namespace (`ip netns exec` execs it: the child's pid is
    /// the program's own).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = Command::new("ip").args(["link", "del", &self.host_link]).output();
    }
}

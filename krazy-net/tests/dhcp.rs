//! krazy-dhcp against dnsmasq in network namespaces (run as root).

mod common;

use common::*;
use std::time::Duration;

#[test]
fn oneshot_configures_address_prefix_route_mtu_and_resolver() {
    if !can_run() {
        return;
    }
    let lab = Lab::new(1);
    let n = &lab.net;
    let _srv = lab.dnsmasq(
        &lab.srv,
        "br0",
        "d1",
        &[
            &format!("--dhcp-range={n}.100,{n}.150,255.255.255.0,2m"),
            &format!("--dhcp-option=6,{n}.53,{n}.54"),
            "--dhcp-option=15,krazy.test",
            "--dhcp-option=119,a.krazy.test,b.krazy.test",
            "--dhcp-option=26,1400",
            &format!("--dhcp-option=42,{n}.123"),
        ],
    );
    let log = lab.dir.path().join("client.log");
    let mut c = lab.client(&["--oneshot"], &log);
    let status = c.terminate_after_exit(Duration::from_secs(20));
    assert!(status.success(), "krazy-dhcp failed: {}", read(&log));
    let addrs = lab.client_addrs();
    assert!(
        addrs.contains(&format!("inet {n}.")) && addrs.contains("/24"),
        "{addrs}"
    );
    assert!(addrs.contains(&format!("brd {n}.255")), "{addrs}");
    let routes = lab.client_routes();
    assert!(
        routes.contains(&format!("default via {n}.1 dev eth0 proto dhcp")),
        "{routes}"
    );
    let link = run("ip", &["-n", &lab.cli, "link", "show", "eth0"]);
    assert!(link.contains("mtu 1400"), "{link}");
    let resolv = read(&lab.resolv());
    assert!(
        resolv.contains(&format!("nameserver {n}.53\nnameserver {n}.54\n")),
        "{resolv}"
    );
    assert!(resolv.contains("domain krazy.test\n"), "{resolv}");
    assert!(
        resolv.contains("search a.krazy.test b.krazy.test\n"),
        "{resolv}"
    );
    // The saved lease carries the NTP server for krazy-ntp and INIT-REBOOT.
    let saved = read(&lab.dir.path().join("leases/dhcp-eth0.json"));
    assert!(saved.contains(&format!("{n}.123")), "{saved}");
    // dnsmasq saw our host name and client id.
    let leases = lab.leases("d1");
    assert!(leases.contains("krazy-test"), "{leases}");
}

#[test]
fn classless_static_routes_win_over_the_router_option() {
    if !can_run() {
        return;
    }
    let lab = Lab::new(2);
    let n = &lab.net;
    let _srv = lab.dnsmasq(
        &lab.srv,
        "br0",
        "d1",
        &[
            &format!("--dhcp-range={n}.100,{n}.150,255.255.255.0,2m"),
            &format!("--dhcp-option=121,0.0.0.0/0,{n}.2,172.16.0.0/16,{n}.3"),
        ],
    );
    let log = lab.dir.path().join("client.log");
    let mut c = lab.client(&["--oneshot"], &log);
    assert!(
        c.terminate_after_exit(Duration::from_secs(20)).success(),
        "{}",
        read(&log)
    );
    let routes = lab.client_routes();
    assert!(
        routes.contains(&format!("default via {n}.2 dev eth0")),
        "{routes}"
    );
    assert!(
        routes.contains(&format!("172.16.0.0/16 via {n}.3 dev eth0")),
        "{routes}"
    );
    assert!(!routes.contains(&format!("via {n}.1 ")), "{routes}");
}

#[test]
fn renews_at_t1_then_releases_on_sigterm() {
    if !can_run() {
        return;
    }
    let lab = Lab::new(3);
    let n = &lab.net;
    let _srv = lab.dnsmasq(
        &lab.srv,
        "br0",
        "d1",
        &[
            &format!("--dhcp-range={n}.100,{n}.150,255.255.255.0,2m"),
            // dnsmasq keeps T1 < T2 (this gives T1 = 3 s, T2 = 4 s).
            "--dhcp-option=58,2",
            "--dhcp-option=59,4",
        ],
    );
    let log = lab.dir.path().join("client.log");
    let mut c = lab.client(&[], &log);
    wait_for("the lease", Duration::from_secs(15), || {
        read(&log).contains("lease applied")
    });
    assert!(read(&log).contains("t1=3"), "{}", read(&log));
    wait_for("a renewal at T1", Duration::from_secs(15), || {
        read(&log).contains("RENEWING ACK")
    });
    let dlog = read(&lab.dir.path().join("d1.log"));
    assert!(dlog.matches("DHCPACK").count() >= 2, "{dlog}");
    let addr = lab.client_addrs();
    assert!(addr.contains(&format!("inet {n}.")), "{addr}");
    assert!(lab.leases("d1").contains(&format!("{n}.")));
    // SIGTERM: RELEASE, address removed, dnsmasq forgets the lease.
    let status = c.terminate().unwrap();
    assert!(status.success(), "{}", read(&log));
    assert!(read(&log).contains("sending RELEASE"));
    wait_for("dnsmasq to drop the lease", Duration::from_secs(5), || {
        !lab.leases("d1").contains(&format!("{n}."))
    });
    assert!(!lab.client_addrs().contains(&format!("inet {n}.")));
    assert!(!lab.dir.path().join("leases/dhcp-eth0.json").exists());
}

#[test]
fn rebinds_to_another_server_when_the_first_goes_away() {
    if !can_run() {
        return;
    }
    let lab = Lab::new(4);
    let n = &lab.net;
    let range = format!("--dhcp-range={n}.100,{n}.150,255.255.255.0,2m");
    let mut first = lab.dnsmasq(
        &lab.srv,
        "br0",
        "d1",
        &[&range, "--dhcp-option=58,1", "--dhcp-option=59,3"],
    );
    let log = lab.dir.path().join("client.log");
    let _c = lab.client(&[], &log);
    wait_for("the lease", Duration::from_secs(15), || {
        read(&log).contains("lease applied")
    });
    let addr_before = lab.client_addrs();
    first.terminate();
    let _second = lab.dnsmasq(
        &lab.srv2,
        "eth0",
        "d2",
        &[
            &range,
            "--dhcp-authoritative",
            "--dhcp-option=58,60",
            "--dhcp-option=59,100",
        ],
    );
    wait_for("a rebinding ACK", Duration::from_secs(20), || {
        read(&log).contains("REBINDING ACK")
    });
    let l = read(&log);
    assert!(l.contains("Renewing: T1 reached"), "{l}");
    assert!(l.contains(&format!("server={n}.2")), "{l}");
    // Still the same address, now leased from the second server.
    assert_eq!(
        lab.client_addrs().split_whitespace().nth(3),
        addr_before.split_whitespace().nth(3)
    );
    assert!(lab.leases("d2").contains(&format!("{n}.1")));
}

#[test]
fn init_reboot_is_nakked_when_the_subnet_changes() {
    if !can_run() {
        return;
    }
    let lab = Lab::new(5);
    let n = &lab.net;
    let mut first = lab.dnsmasq(
        &lab.srv,
        "br0",
        "d1",
        &[&format!("--dhcp-range={n}.100,{n}.150,255.255.255.0,2m")],
    );
    let log = lab.dir.path().join("client1.log");
    assert!(lab
        .client(&["--oneshot"], &log)
        .terminate_after_exit(Duration::from_secs(20))
        .success());
    first.terminate();
    // "Reboot" the client into a network renumbered to another subnet.
    run("ip", &["-n", &lab.cli, "addr", "flush", "dev", "eth0"]);
    let m = format!("10.{}.{}", 200, std::process::id() % 250);
    run("ip", &["-n", &lab.srv, "addr", "flush", "dev", "br0"]);
    run(
        "ip",
        &[
            "-n",
            &lab.srv,
            "addr",
            "add",
            &format!("{m}.1/24"),
            "dev",
            "br0",
        ],
    );
    let _second = lab.dnsmasq(
        &lab.srv,
        "br0",
        "d2",
        &[
            &format!("--dhcp-range={m}.100,{m}.150,255.255.255.0,2m"),
            "--dhcp-authoritative",
        ],
    );
    let log2 = lab.dir.path().join("client2.log");
    let status = lab
        .client(&["--oneshot"], &log2)
        .terminate_after_exit(Duration::from_secs(20));
    let l = read(&log2);
    assert!(status.success(), "{l}");
    assert!(
        l.contains("INIT-REBOOT: requesting the saved address"),
        "{l}"
    );
    assert!(l.contains("NAK: back to INIT"), "{l}");
    assert!(
        lab.client_addrs().contains(&format!("inet {m}.")),
        "{}",
        lab.client_addrs()
    );
}

#[test]
fn static_configuration_file() {
    if !can_run() {
        return;
    }
    let lab = Lab::new(6);
    let n = &lab.net;
    let conf = lab.dir.path().join("static.toml");
    std::fs::write(
        &conf,
        format!("address = \"{n}.9/24\"\ngateway = \"{n}.1\"\ndns = [\"{n}.53\"]\n"),
    )
    .unwrap();
    let log = lab.dir.path().join("client.log");
    let status = lab
        .client(
            &["--oneshot", "--static", &conf.display().to_string()],
            &log,
        )
        .terminate_after_exit(Duration::from_secs(20));
    assert!(status.success(), "{}", read(&log));
    assert!(lab.client_addrs().contains(&format!("inet {n}.9/24")));
    assert!(lab.client_routes().contains(&format!("default via {n}.1")));
    assert!(read(&lab.resolv()).contains(&format!("nameserver {n}.53")));
    // A gateway outside the subnet is refused.
    std::fs::write(
        &conf,
        format!("address = \"{n}.9/24\"\ngateway = \"192.0.2.1\"\n"),
    )
    .unwrap();
    let status = lab
        .client(
            &["--oneshot", "--static", &conf.display().to_string()],
            &log,
        )
        .terminate_after_exit(Duration::from_secs(20));
    assert!(!status.success());
    assert!(read(&log).contains("outside"), "{}", read(&log));
}

"""The private host engine's pure plans: its command line and its firewall rules."""
from __future__ import annotations

from tests.support import hostdocker

POOL = "10.214.0.0/16"


def test_the_engine_leaves_the_firewall_to_us():
    argv = hostdocker.dockerd_argv()
    assert "--iptables=false" in argv and "--ip-forward=false" in argv
    assert "--ip-masq=false" in argv
    assert f"--default-address-pool=base={POOL},size=24" in argv


def test_filter_rules():
    assert hostdocker.filter_rules(POOL) == [
        ["-i", "labbr+", "-j", "RETURN"],
        ["-o", "labbr+", "-j", "RETURN"],
        ["-m", "physdev", "--physdev-is-bridged", "-j", "ACCEPT"],
        ["-s", POOL, "-d", POOL, "-j", "DROP"],
        ["-d", POOL, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
        ["-s", POOL, "-j", "ACCEPT"],
    ]


def test_nat_rules_and_jumps():
    assert hostdocker.nat_rules(POOL) == [["-s", POOL, "!", "-d", POOL, "-j", "MASQUERADE"]]
    assert hostdocker.jump_rules(POOL) == {
        "filter": [["FORWARD", "-s", POOL, "-j", "LAB-HOSTDOCKER"],
                   ["FORWARD", "-d", POOL, "-j", "LAB-HOSTDOCKER"]],
        "nat": [["POSTROUTING", "-s", POOL, "-j", "LAB-HOSTDOCKER"]],
    }


def test_restore_text():
    assert hostdocker.restore_text("10.9.0.0/16") == "\n".join([
        "*filter",
        ":LAB-HOSTDOCKER - [0:0]",
        "-A LAB-HOSTDOCKER -i labbr+ -j RETURN",
        "-A LAB-HOSTDOCKER -o labbr+ -j RETURN",
        "-A LAB-HOSTDOCKER -m physdev --physdev-is-bridged -j ACCEPT",
        "-A LAB-HOSTDOCKER -s 10.9.0.0/16 -d 10.9.0.0/16 -j DROP",
        "-A LAB-HOSTDOCKER -d 10.9.0.0/16 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A LAB-HOSTDOCKER -s 10.9.0.0/16 -j ACCEPT",
        "-I FORWARD 1 -s 10.9.0.0/16 -j LAB-HOSTDOCKER",
        "-I FORWARD 1 -d 10.9.0.0/16 -j LAB-HOSTDOCKER",
        "COMMIT",
        "*nat",
        ":LAB-HOSTDOCKER - [0:0]",
        "-A LAB-HOSTDOCKER -s 10.9.0.0/16 ! -d 10.9.0.0/16 -j MASQUERADE",
        "-I POSTROUTING 1 -s 10.9.0.0/16 -j LAB-HOSTDOCKER",
        "COMMIT",
        "",
    ])


def test_removal_takes_only_our_chain_and_the_jumps_to_it():
    listing = [
        "-P FORWARD DROP",
        "-N DOCKER-ISOLATION-STAGE-1",
        "-N LAB-FORWARD",
        "-N LAB-HOSTDOCKER",
        f"-A FORWARD -d {POOL} -j LAB-HOSTDOCKER",
        f"-A FORWARD -s {POOL} -j LAB-HOSTDOCKER",
        "-A FORWARD -j DOCKER-ISOLATION-STAGE-1",
        "-A FORWARD -i labbr+ -j LAB-FORWARD",
        "-A LAB-HOSTDOCKER -m physdev --physdev-is-bridged -j ACCEPT",
        f"-A LAB-HOSTDOCKER -s {POOL} -j ACCEPT",
    ]
    assert hostdocker.removal_commands("filter", listing) == [
        ["-t", "filter", "-D", "FORWARD", "-d", POOL, "-j", "LAB-HOSTDOCKER"],
        ["-t", "filter", "-D", "FORWARD", "-s", POOL, "-j", "LAB-HOSTDOCKER"],
        ["-t", "filter", "-F", "LAB-HOSTDOCKER"],
        ["-t", "filter", "-X", "LAB-HOSTDOCKER"],
    ]


def test_removal_of_what_is_gone_is_nothing():
    assert hostdocker.removal_commands("nat", ["-P POSTROUTING ACCEPT", "-N DOCKER",
                                               "-A DOCKER -i docker0 -j RETURN"]) == []

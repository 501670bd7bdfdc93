use super::*;

fn launcher() -> PolicyContainer {
    PolicyContainer {
        name: "demo-app-code-launcher".to_owned(),
        command: vec![
            "encfs".to_owned(),
            "cleanroom".to_owned(),
            "code-launcher".to_owned(),
            "--application-name".to_owned(),
            "demo-app".to_owned(),
        ],
        env: vec![
            "APPLICATION_NAME=demo-app".to_owned(),
            "TELEMETRY_MOUNT_PATH=/mnt/telemetry".to_owned(),
        ],
        mounts: vec![
            PolicyMount {
                destination: "/mnt/remote".to_owned(),
                source: "remotemounts".to_owned(),
                read_only: false,
            },
            PolicyMount {
                destination: "/mnt/volumestatus".to_owned(),
                source: "volumestatusmounts".to_owned(),
                read_only: true,
            },
        ],
        working_dir: "/".to_owned(),
    }
}

fn skr() -> PolicyContainer {
    PolicyContainer {
        name: "skr".to_owned(),
        command: vec!["encfs".to_owned(), "sidecar".to_owned(), "skr".to_owned()],
        env: vec![],
        mounts: vec![],
        working_dir: "/".to_owned(),
    }
}

fn request(c: &PolicyContainer) -> ContainerRequest {
    ContainerRequest {
        name: c.name.clone(),
        command: c.command.clone(),
        env: c.env.clone(),
        mounts: c.mounts.clone(),
        working_dir: c.working_dir.clone(),
    }
}

fn policy() -> SecurityPolicy {
    SecurityPolicy::parse(&render(&[launcher(), skr()])).unwrap()
}

fn refusal(p: &SecurityPolicy, r: &ContainerRequest) -> PolicyRefusal {
    p.check_container(r).expect_err("should be refused")
}

#[test]
fn hostdata_is_sha256_hex_of_the_text() {
    assert_eq!(
        hostdata("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let rego = render(&[launcher()]);
    let mut edited = rego.clone().into_bytes();
    let at = edited.len() / 2;
    edited[at] ^= 1;
    let edited = String::from_utf8(edited).unwrap();
    assert_ne!(hostdata(&rego), hostdata(&edited));
    assert_eq!(SecurityPolicy::parse(&rego).unwrap().hostdata(), hostdata(&rego));
}

#[test]
fn render_is_deterministic_with_sorted_compact_keys() {
    let rego = render(&[launcher(), skr()]);
    assert_eq!(rego, render(&[launcher(), skr()]));
    assert!(rego.starts_with("package policy\n"));
    assert!(rego.contains("api_version := \"0.10.0\""));
    let line = rego
        .lines()
        .find(|l| l.contains("\"name\":\"skr\""))
        .unwrap();
    assert_eq!(
        line,
        r#"{"command":["encfs","sidecar","skr"],"env_rules":[],"exec_processes":[],"mounts":[],"name":"skr","signals":[],"working_dir":"/"}"#
    );
}

#[test]
fn admits_each_agreed_container_exactly() {
    let p = policy();
    for c in [launcher(), skr()] {
        p.check_container(&request(&c)).unwrap();
    }
}

#[test]
fn refuses_an_unknown_container() {
    let mut r = request(&skr());
    r.name = "intruder".to_owned();
    let e = refusal(&policy(), &r);
    assert!(e.concerns("name"), "{e}");
    assert_eq!(e.differences[0].rule, "create_container");
}

#[test]
fn refuses_a_changed_command() {
    let mut r = request(&launcher());
    r.command.push("--debug".to_owned());
    let e = refusal(&policy(), &r);
    assert_eq!(e.differences.len(), 1, "{e}");
    assert!(e.concerns("command"), "{e}");
    assert!(e.to_string().contains("--debug"), "{e}");
}

#[test]
fn refuses_an_extra_changed_or_missing_env_var_naming_only_the_variable() {
    let p = policy();
    let mut extra = request(&launcher());
    extra.env.push("LD_PRELOAD=/tmp/evil-secret.so".to_owned());
    let e = refusal(&p, &extra);
    assert!(e.concerns("env"), "{e}");
    assert!(e.to_string().contains("LD_PRELOAD"), "{e}");
    assert!(!e.to_string().contains("evil-secret"), "values stay out: {e}");

    let mut changed = request(&launcher());
    changed.env[0] = "APPLICATION_NAME=other".to_owned();
    let e = refusal(&p, &changed);
    assert!(e.concerns("env"), "{e}");
    assert!(!e.to_string().contains("=other"), "{e}");

    let mut missing = request(&launcher());
    missing.env.pop();
    let e = refusal(&p, &missing);
    assert!(e.to_string().contains("TELEMETRY_MOUNT_PATH"), "{e}");
}

#[test]
fn refuses_an_extra_mount_and_rw_where_ro_was_agreed() {
    let p = policy();
    let mut extra = request(&launcher());
    extra.mounts.push(MountRequest {
        destination: "/host".to_owned(),
        source: "remotemounts".to_owned(),
        read_only: true,
    });
    let e = refusal(&p, &extra);
    assert!(e.concerns("mounts"), "{e}");
    assert!(e.to_string().contains("/host is not agreed"), "{e}");

    let mut rw = request(&launcher());
    rw.mounts[1].read_only = false;
    let e = refusal(&p, &rw);
    assert!(e.concerns("mounts"), "{e}");
    assert!(e.to_string().contains("rw"), "{e}");

    let mut other_source = request(&launcher());
    other_source.mounts[0].source = "telemetrymounts".to_owned();
    assert!(refusal(&p, &other_source).concerns("mounts"));
}

#[test]
fn refuses_a_changed_working_dir() {
    let mut r = request(&skr());
    r.working_dir = "/tmp".to_owned();
    assert!(refusal(&policy(), &r).concerns("working_dir"));
}

#[test]
fn reports_every_difference_at_once() {
    let mut r = request(&launcher());
    r.command[0] = "sh".to_owned();
    r.working_dir = "/root".to_owned();
    let e = refusal(&policy(), &r);
    assert!(e.concerns("command") && e.concerns("working_dir"), "{e}");
}

#[test]
fn allow_all_admits_anything() {
    let p = SecurityPolicy::parse(ALLOW_ALL).unwrap();
    let r = ContainerRequest {
        name: "anything".to_owned(),
        command: vec!["sh".to_owned(), "-c".to_owned(), "id".to_owned()],
        env: vec!["X=1".to_owned()],
        mounts: vec![MountRequest {
            destination: "/".to_owned(),
            source: "/".to_owned(),
            read_only: false,
        }],
        working_dir: "/".to_owned(),
    };
    p.check_container(&r).unwrap();
    assert_ne!(p.hostdata(), hostdata(&render(&[])));
}

#[test]
fn malformed_or_foreign_policies_are_errors() {
    assert!(matches!(
        SecurityPolicy::parse("package policy\ncreate_container := {"),
        Err(PolicyError::Parse(_))
    ));
    assert!(matches!(
        SecurityPolicy::parse("package other\ncreate_container := {\"allowed\": true}\n"),
        Err(PolicyError::NotAPolicy(_))
    ));
    assert!(matches!(
        SecurityPolicy::parse("package policy\nx := 1\n"),
        Err(PolicyError::NotAPolicy(_))
    ));
}

#[test]
fn a_policy_without_a_boolean_decision_refuses() {
    let p = SecurityPolicy::parse("package policy\ncreate_container := {\"allowed\": \"yes\"}\n");
    // Either refused at parse (probe) or at check: never admitted.
    if let Ok(p) = p {
        assert!(p.check_container(&request(&skr())).is_err());
    }
}

#[test]
fn check_container_time() {
    let containers: Vec<PolicyContainer> = (0..10)
        .map(|i| {
            let mut c = launcher();
            c.name = format!("c{i}");
            c
        })
        .collect();
    let p = SecurityPolicy::parse(&render(&containers)).unwrap();
    let r = request(&containers[9]);
    p.check_container(&r).unwrap();
    let rounds = 50;
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        p.check_container(&r).unwrap();
    }
    let per = start.elapsed() / rounds;
    println!("check_container: {per:?} per admitted request (10 agreed containers)");
    let mut bad = r.clone();
    bad.env.push("X=1".to_owned());
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        p.check_container(&bad).unwrap_err();
    }
    println!(
        "check_container: {:?} per refused request",
        start.elapsed() / rounds
    );
}

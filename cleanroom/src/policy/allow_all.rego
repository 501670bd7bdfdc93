package policy

# encfs allow-all clean-room policy: every enforcement point admits everything. For tests and
# demonstrations only; its hostdata says so to anyone who reads the accepted policy.

api_version := "0.10.0"
framework_version := "encfs-allow-all"

mount_device := {"allowed": true}
unmount_device := {"allowed": true}
mount_overlay := {"allowed": true}
unmount_overlay := {"allowed": true}
create_container := {"allowed": true, "errors": []}
exec_in_container := {"allowed": true, "errors": []}
exec_external := {"allowed": true}
shutdown_container := {"allowed": true}
signal_container_process := {"allowed": true, "errors": []}
scratch_mount := {"allowed": true}
scratch_unmount := {"allowed": true}
plan9_mount := {"allowed": true}
plan9_unmount := {"allowed": true}
get_properties := {"allowed": true}
dump_stacks := {"allowed": true}
runtime_logging := {"allowed": true}
load_fragment := {"allowed": true}


# ---------------------------------------------------------------------------------------------
# encfs clean-room policy framework (Rego v0). It ships inside the hashed policy, so the
# hostdata covers the rules as well as the containers above. Every enforcement point answers
# an object with "allowed"; create_container, exec_in_container and signal_container_process
# also answer "errors": one {"rule", "field", "message"} per difference from the agreed
# container. Decisions read only `containers`, the flags above and `input`.
# ---------------------------------------------------------------------------------------------

external_processes := []

# -- create_container -------------------------------------------------------------------------
# input: {"name", "argList": [..], "envList": ["K=V", ..], "workingDir",
#         "mounts": [{"destination", "source", "type", "options": [..]}]}

create_container := {"allowed": true, "errors": create_container_errors} {
	count(create_container_errors) == 0
}

create_container := {"allowed": false, "errors": create_container_errors} {
	count(create_container_errors) > 0
}

agreed_container_count[n] {
	n := count([c | c := containers[_]; c.name == input.name])
}

agreed_container := c {
	c := containers[_]
	c.name == input.name
}

create_container_errors[e] {
	not is_string(input.name)
	e := refusal("create_container", "name", "the request names no container")
}

create_container_errors[e] {
	is_string(input.name)
	agreed_container_count[0]
	e := refusal("create_container", "name", sprintf("no container named %v is agreed", [input.name]))
}

create_container_errors[e] {
	c := agreed_container
	not is_array(input.argList)
	e := refusal("create_container", "command", "the request has no command")
}

create_container_errors[e] {
	c := agreed_container
	is_array(input.argList)
	input.argList != c.command
	e := refusal("create_container", "command", sprintf("command %v differs from the agreed %v", [input.argList, c.command]))
}

create_container_errors[e] {
	c := agreed_container
	not is_array(input.envList)
	e := refusal("create_container", "env", "the request has no environment")
}

create_container_errors[e] {
	c := agreed_container
	env := input.envList[_]
	not env_agreed(c, env)
	e := refusal("create_container", "env", sprintf("variable %v is not agreed with this value", [env_name(env)]))
}

create_container_errors[e] {
	c := agreed_container
	is_array(input.envList)
	rule := c.env_rules[_]
	rule.required
	not env_requested(rule)
	e := refusal("create_container", "env", sprintf("agreed variable %v is missing or differs", [env_name(rule.pattern)]))
}

create_container_errors[e] {
	c := agreed_container
	not is_string(input.workingDir)
	e := refusal("create_container", "working_dir", "the request has no working directory")
}

create_container_errors[e] {
	c := agreed_container
	is_string(input.workingDir)
	input.workingDir != c.working_dir
	e := refusal("create_container", "working_dir", sprintf("working directory %v differs from the agreed %v", [input.workingDir, c.working_dir]))
}

create_container_errors[e] {
	c := agreed_container
	not is_array(input.mounts)
	e := refusal("create_container", "mounts", "the request has no mount list")
}

create_container_errors[e] {
	c := agreed_container
	m := input.mounts[_]
	not mount_agreed(c, m)
	e := refusal("create_container", "mounts", mount_difference(c, m))
}

env_name(pattern) := name {
	name := split(pattern, "=")[0]
}

env_rule_matches(rule, env) {
	rule.strategy == "string"
	rule.pattern == env
}

env_agreed(c, env) {
	env_rule_matches(c.env_rules[_], env)
}

env_requested(rule) {
	env_rule_matches(rule, input.envList[_])
}

mount_matches(agreed, m) {
	agreed.destination == m.destination
	agreed.source == m.source
	agreed.type == m.type
	agreed.options == m.options
}

mount_agreed(c, m) {
	mount_matches(c.mounts[_], m)
}

mount_difference(c, m) := message {
	agreed := c.mounts[_]
	agreed.destination == m.destination
	message := sprintf("mount %v is %v %v %v where the agreed is %v %v %v", [m.destination, m.type, m.source, m.options, agreed.type, agreed.source, agreed.options])
}

mount_difference(c, m) := message {
	count([a | a := c.mounts[_]; a.destination == m.destination]) == 0
	message := sprintf("mount %v is not agreed", [m.destination])
}

refusal(rule, field, message) := {"field": field, "message": message, "rule": rule}

# -- exec_in_container, exec_external ---------------------------------------------------------
# input: {"name", "argList", "envList", "workingDir"}

exec_in_container := {"allowed": true, "errors": exec_in_container_errors} {
	count(exec_in_container_errors) == 0
}

exec_in_container := {"allowed": false, "errors": exec_in_container_errors} {
	count(exec_in_container_errors) > 0
}

exec_in_container_errors[e] {
	agreed_container_count[0]
	e := refusal("exec_in_container", "name", sprintf("no container named %v is agreed", [input.name]))
}

exec_in_container_errors[e] {
	c := agreed_container
	count([p | p := c.exec_processes[_]; p.command == input.argList; p.working_dir == input.workingDir]) == 0
	e := refusal("exec_in_container", "command", sprintf("no agreed process of %v runs %v", [input.name, input.argList]))
}

default exec_external := {"allowed": false}

exec_external := {"allowed": true} {
	p := external_processes[_]
	p.command == input.argList
	p.working_dir == input.workingDir
}

# -- signals and shutdown ---------------------------------------------------------------------
# input: {"name", "signal": number}

signal_container_process := {"allowed": true, "errors": signal_errors} {
	count(signal_errors) == 0
}

signal_container_process := {"allowed": false, "errors": signal_errors} {
	count(signal_errors) > 0
}

signal_errors[e] {
	agreed_container_count[0]
	e := refusal("signal_container_process", "name", sprintf("no container named %v is agreed", [input.name]))
}

signal_errors[e] {
	c := agreed_container
	count([s | s := c.signals[_]; s == input.signal]) == 0
	e := refusal("signal_container_process", "signal", sprintf("signal %v is not agreed for %v", [input.signal, input.name]))
}

shutdown_container := {"allowed": true}

# -- devices, overlays, scratch, plan9 --------------------------------------------------------
# Images are not measured by this framework (no layer hashes are agreed), so no device or
# overlay is admitted; releasing one is always allowed.

mount_device := {"allowed": false}

unmount_device := {"allowed": true}

mount_overlay := {"allowed": false}

unmount_overlay := {"allowed": true}

default scratch_mount := {"allowed": false}

scratch_mount := {"allowed": true} {
	input.encrypted == true
}

scratch_mount := {"allowed": true} {
	allow_unencrypted_scratch
}

scratch_unmount := {"allowed": true}

plan9_mount := {"allowed": false}

plan9_unmount := {"allowed": true}

# -- the guest's own operations ---------------------------------------------------------------

get_properties := {"allowed": allow_properties_access}

dump_stacks := {"allowed": allow_dump_stacks}

runtime_logging := {"allowed": allow_runtime_logging}

# No fragment is ever loaded: everything agreed is in this file.
load_fragment := {"allowed": false}

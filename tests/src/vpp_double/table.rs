//! The double's message table: names and CRCs as a VPP 25.10 / 26.10-rc0
//! build with the memif and nat plugins registers them (`<name>_<crc>`),
//! listed here on their own, never taken from the agent, so the agent's
//! CRC check is tested against an independent source. Some messages the
//! agent does not use are served too, as a real table has thousands.

/// (name, crc) of every message served, in registration order. memclnt
/// comes first, so sockclnt_create gets id 15 as in every VPP.
pub const MESSAGES: &[(&str, &str)] = &[
    ("memclnt_create", "9c5e1c2f"),
    ("memclnt_create_reply", "42ec4560"),
    ("memclnt_delete", "7e1c04e3"),
    ("memclnt_delete_reply", "3d3b6312"),
    ("rx_thread_exit", "c3a3a452"),
    ("memclnt_rx_thread_suspend", "c3a3a452"),
    ("memclnt_read_timeout", "c3a3a452"),
    ("rpc_call", "7e8a2c95"),
    ("rpc_call_reply", "e8d4e804"),
    ("get_first_msg_id", "ebf79a66"),
    ("get_first_msg_id_reply", "7d337472"),
    ("api_versions", "51077d14"),
    ("api_versions_reply", "5f0d99d6"),
    ("trace_plugin_msg_ids", "f476d3ce"),
    ("sockclnt_create", "455fb9c4"),
    ("sockclnt_create_reply", "35166268"),
    ("sockclnt_delete", "8ac76db6"),
    ("sockclnt_delete_reply", "8f38b1ee"),
    ("sock_init_shm", "51646d92"),
    ("sock_init_shm_reply", "e8d4e804"),
    ("memclnt_keepalive", "51077d14"),
    ("memclnt_keepalive_reply", "e8d4e804"),
    ("control_ping", "51077d14"),
    ("control_ping_reply", "f6b0b8ca"),
    ("show_version", "51077d14"),
    ("show_version_reply", "c919bde1"),
    ("cli_inband", "f8377302"),
    ("cli_inband_reply", "05879051"),
    ("sw_interface_set_flags", "f5aec1b8"),
    ("sw_interface_set_flags_reply", "e8d4e804"),
    ("sw_interface_add_del_address", "5463d73b"),
    ("sw_interface_add_del_address_reply", "e8d4e804"),
    ("sw_interface_dump", "aa610c27"),
    ("sw_interface_details", "6c221fc7"),
    ("ip_route_add_del", "b8ecfe0d"),
    ("ip_route_add_del_reply", "1992deab"),
    ("ip_route_add_del_v2", "521ef330"),
    ("ip_route_add_del_v2_reply", "1992deab"),
    ("memif_socket_filename_add_del", "a2ce1a10"),
    ("memif_socket_filename_add_del_reply", "e8d4e804"),
    ("memif_socket_filename_add_del_v2", "34223bdf"),
    ("memif_socket_filename_add_del_v2_reply", "9f29bdb9"),
    ("memif_create", "b1b25061"),
    ("memif_create_reply", "5383d31f"),
    ("memif_create_v2", "8c7de5f7"),
    ("memif_create_v2_reply", "5383d31f"),
    ("memif_delete", "f9e6675e"),
    ("memif_delete_reply", "e8d4e804"),
    ("memif_socket_filename_details", "7ff326f7"),
    ("memif_socket_filename_dump", "51077d14"),
    ("memif_dump", "51077d14"),
    ("memif_details", "da34feb9"),
    ("nat44_ed_plugin_enable_disable", "be17f8dd"),
    ("nat44_ed_plugin_enable_disable_reply", "e8d4e804"),
    ("nat_set_timeouts", "d4746b16"),
    ("nat_set_timeouts_reply", "e8d4e804"),
    ("nat44_add_del_address_range", "6f2b8055"),
    ("nat44_add_del_address_range_reply", "e8d4e804"),
    ("nat44_interface_add_del_feature", "f3699b83"),
    ("nat44_interface_add_del_feature_reply", "e8d4e804"),
    ("nat44_add_del_static_mapping_v2", "5e205f1a"),
    ("nat44_add_del_static_mapping_v2_reply", "e8d4e804"),
    ("nat44_add_del_identity_mapping", "02faaa22"),
    ("nat44_add_del_identity_mapping_reply", "e8d4e804"),
    ("nat44_user_dump", "51077d14"),
    ("nat44_user_details", "355896c2"),
    ("nat44_user_session_dump", "e1899c98"),
    ("nat44_user_session_details", "2cf6e16d"),
    ("nat44_user_session_v3_dump", "e1899c98"),
    ("nat44_user_session_v3_details", "edae926e"),
];

/// The id of the first entry: memclnt's ids start at 1.
pub const FIRST_ID: u16 = 1;

/// The id VPP gives `name` in this table.
pub fn id_of(name: &str) -> u16 {
    let i = MESSAGES
        .iter()
        .position(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("the double serves no message {name}"));
    FIRST_ID + i as u16
}

/// The name of message `id`, if served.
pub fn name_of(id: u16) -> Option<&'static str> {
    let i = id.checked_sub(FIRST_ID)? as usize;
    MESSAGES.get(i).map(|(n, _)| *n)
}

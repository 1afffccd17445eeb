//! The conformance cases, grouped as in CONFORMANCE.md. Every case is a plain
//! function `fn(&S) -> Result<()>` for any [`state_api::StateBackend`] `S`;
//! assertions panic with a message naming what broke, backend errors return
//! `Err`.
//!
//! To add a case: write the function in its module and add its path to
//! [`for_each_case!`](crate::for_each_case); every backend then runs it.

pub mod checkpointed;
pub mod keyed;
pub mod operator;
pub mod snapshot;

/// Calls `$callback!($backend; module::case, ...)` with every case of the suite.
#[macro_export]
macro_rules! for_each_case {
    ($callback:path, $backend:expr) => {
        $callback! { $backend;
            checkpointed::checkpointed_function_rescale,
            checkpointed::example_job_counts_exactly_once,
            keyed::value_basic,
            keyed::value_several_states,
            keyed::value_update_none_clears,
            keyed::value_set_and_modify,
            keyed::value_default_when_absent,
            keyed::value_default_is_fresh_copy,
            keyed::value_concurrent_read_during_snapshot,
            keyed::list_add,
            keyed::list_add_all,
            keyed::list_update,
            keyed::list_get,
            keyed::list_clear,
            keyed::list_update_empty_clears,
            keyed::list_add_all_empty_is_noop,
            keyed::list_merge_namespaces,
            keyed::list_merge_namespaces_no_sources,
            keyed::reducing_add_get,
            keyed::reducing_merge_namespaces,
            keyed::aggregating_mutable_accumulator,
            keyed::aggregating_immutable_accumulator,
            keyed::aggregating_merge_namespaces,
            keyed::map_put_get,
            keyed::map_contains,
            keyed::map_remove,
            keyed::map_put_all,
            keyed::map_keys,
            keyed::map_values,
            keyed::map_entries,
            keyed::map_retain,
            keyed::map_remove_while_iterating,
            keyed::map_is_empty,
            keyed::map_default_empty,
            keyed::namespaces_independent,
            keyed::namespaces_keys_listing,
            keyed::namespaces_keys_and_namespaces,
            keyed::backend_num_entries,
            keyed::backend_apply_to_all_keys,
            keyed::backend_apply_to_all_keys_while_modifying,
            keyed::backend_keys_match_written,
            keyed::register_same_name_again_returns_same_state,
            keyed::register_same_name_other_kind_fails,
            keyed::register_same_name_other_types_fails,
            keyed::register_same_name_incompatible_codec_fails,
            keyed::restore_incompatible_key_codec_fails,
            keyed::backend_no_current_key_fails,
            keyed::backend_set_current_key_out_of_range_keeps_previous,
            keyed::backend_foreign_handle_fails,
            snapshot::snapshot_empty_backend_yields_none,
            snapshot::snapshot_restore_all_kinds,
            snapshot::snapshot_non_accessed_state_restores,
            snapshot::snapshot_restored_unregistered_state_survives,
            snapshot::snapshot_async_isolation,
            snapshot::snapshot_several_in_flight,
            snapshot::snapshot_cancelled_on_close,
            snapshot::snapshot_closed_backend_rejects_calls,
            snapshot::rescale_2_to_2,
            snapshot::rescale_2_to_4,
            snapshot::rescale_4_to_2,
            snapshot::rescale_15_to_77,
            snapshot::rescale_77_to_15,
            snapshot::rescale_restore_keeps_only_own_key_groups,
            snapshot::restore_other_max_parallelism_fails,
            snapshot::snapshot_compressed_restores,
            snapshot::rescale_unregistered_states_survive,
            snapshot::restore_register_other_kind_fails,
            snapshot::restore_with_other_types_fails,
            snapshot::restore_with_declared_type_migration,
            snapshot::notify_checkpoint_contract,
            snapshot::failed_migration_leaves_no_partial_state,
            operator::operator_register_list_state,
            operator::operator_register_union_list_state,
            operator::operator_register_broadcast_state,
            operator::operator_reregister_other_mode_fails,
            operator::operator_empty_snapshot_yields_none,
            operator::operator_snapshot_restore_sync,
            operator::operator_snapshot_restore_async,
            operator::operator_async_snapshot_isolation,
            operator::operator_close_cancels_async_snapshot,
            operator::operator_unregistered_state_survives,
            operator::operator_redistribute_even_split,
            operator::operator_split_same_parallelism_keeps_elements,
            operator::operator_redistribute_union,
            operator::operator_redistribute_broadcast,
        }
    };
}

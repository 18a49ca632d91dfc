#!/bin/bash
# snapext devstack plugin: the compute driver, the nova-api filter and the
# [snapext] options.  Not yet run in a devstack here: the project's own
# tests drive the same pieces directly (see README).

function install_snapext {
    setup_develop "$SNAPEXT_DIR"
    # Nova loads compute drivers only from nova.virt; an editable install
    # cannot add a module there, so link the shim a wheel would install.
    local novavirt
    novavirt=$($PYTHON -c 'import nova.virt, os; print(os.path.dirname(nova.virt.__file__))')
    sudo ln -sfn "$SNAPEXT_DIR/nova/virt/snapext" "$novavirt/snapext"
}

function configure_snapext {
    local conf
    for conf in "$NOVA_CONF" "$NOVA_CPU_CONF"; do
        [[ -f "$conf" ]] || continue
        iniset "$conf" snapext full_snapshot_default "$SNAPEXT_FULL_SNAPSHOT_DEFAULT"
        iniset "$conf" snapext file_store_path "$SNAPEXT_STORE_PATH"
        iniset "$conf" snapext lock_path "$SNAPEXT_STORE_PATH/locks"
    done
    iniset "$NOVA_CPU_CONF" DEFAULT compute_driver snapext.SnapextLibvirtDriver
    sudo install -d -o "$STACK_USER" "$SNAPEXT_STORE_PATH"

    # The filter goes right after keystonecontext in both compute
    # pipelines (etc/api-paste.ini.snippet).
    iniset "$NOVA_API_PASTE_INI" filter:snapext use egg:snapext#snapext
    if ! grep -q 'keystonecontext snapext' "$NOVA_API_PASTE_INI"; then
        sed -i 's/keystonecontext /keystonecontext snapext /' "$NOVA_API_PASTE_INI"
    fi
}

if is_service_enabled n-cpu n-api; then
    if [[ "$1" == "stack" && "$2" == "install" ]]; then
        echo_summary "Installing snapext"
        install_snapext
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring snapext"
        configure_snapext
    fi
fi

if [[ "$1" == "clean" ]]; then
    sudo rm -rf "$SNAPEXT_STORE_PATH"
fi

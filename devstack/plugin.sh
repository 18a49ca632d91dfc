#!/bin/bash
# snapext devstack plugin: the compute driver, the nova-api filter, the
# [snapext] options, Glance's notifications (image.delete reaches the
# agents) and, when c-vol is enabled, the Cinder backend and its
# consistent group type.  The configuration steps live in devstack/lib/snapext,
# which tools/aio (the project's integration cloud) runs on every test run.

# shellcheck source=devstack/lib/snapext
source "$SNAPEXT_DIR/devstack/lib/snapext"

function install_snapext {
    setup_develop "$SNAPEXT_DIR"
    # Nova loads compute drivers only from nova.virt; an editable install
    # cannot add a module there, so link the shim a wheel would install.
    local novavirt
    novavirt=$($PYTHON -c 'import nova.virt, os; print(os.path.dirname(nova.virt.__file__))')
    sudo ln -sfn "$SNAPEXT_DIR/nova/virt/snapext" "$novavirt/snapext"
}

if is_service_enabled n-cpu n-api c-vol g-api; then
    if [[ "$1" == "stack" && "$2" == "install" ]]; then
        if is_service_enabled n-cpu n-api c-vol; then
            echo_summary "Installing snapext"
            install_snapext
        fi
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring snapext"
        if is_service_enabled n-cpu n-api; then
            snapext_configure_nova
        fi
        if is_service_enabled c-vol; then
            snapext_configure_cinder
        fi
        if is_service_enabled g-api; then
            snapext_configure_glance
        fi
    elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
        if is_service_enabled c-api; then
            echo_summary "Creating the snapext volume and group types"
            snapext_create_cinder_types
        fi
    fi
fi

if [[ "$1" == "clean" ]]; then
    sudo rm -rf "$SNAPEXT_STORE_PATH"
fi

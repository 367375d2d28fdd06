#!/bin/sh
# Join CouchDB nodes into one cluster through CouchDB's /_cluster_setup API
# (https://docs.couchdb.org/en/stable/setup/cluster.html#the-cluster-setup-api).
# docker-compose.yml runs it once (service couchdb-setup) after every node is healthy.
#
#   COUCHDB_NODES     the nodes' host names, the coordinator first ("couchdb-1 couchdb-2 ...");
#                     each runs with NODENAME=<its host name>
#   COUCHDB_USER      the admin every node was started with (and COUCHDB_PASSWORD)
#   COUCHDB_PORT      5984 unless told otherwise
#
# Every call goes to the coordinator. Running it again is safe: a finished cluster is
# left as it is, and a node that is already a member is not added twice. It ends by
# checking that /_membership lists every node as a cluster node, and fails otherwise.
set -eu

: "${COUCHDB_NODES:?name the nodes, coordinator first: COUCHDB_NODES=\"couchdb-1 couchdb-2 couchdb-3\"}"
: "${COUCHDB_USER:?set COUCHDB_USER to the nodes' admin}"
: "${COUCHDB_PASSWORD:?set COUCHDB_PASSWORD to the nodes' admin password}"
PORT="${COUCHDB_PORT:-5984}"

case "$COUCHDB_USER$COUCHDB_PASSWORD" in
*'"'* | *'\'*)
    echo "couchdb-setup: the admin name and password go into JSON here; use one without \" or \\" >&2
    exit 2
    ;;
esac

set -- $COUCHDB_NODES
FIRST="$1"
COUNT="$#"

# api METHOD PATH [BODY]: the coordinator's answer on stdout; a non-2xx status fails.
api() {
    if [ "$#" -eq 3 ]; then
        curl -fsS --retry 5 --retry-connrefused --retry-delay 2 -u "$COUCHDB_USER:$COUCHDB_PASSWORD" \
            -X "$1" -H 'Content-Type: application/json' -d "$3" "http://$FIRST:$PORT$2"
    else
        curl -fsS --retry 5 --retry-connrefused --retry-delay 2 -u "$COUCHDB_USER:$COUCHDB_PASSWORD" \
            -X "$1" "http://$FIRST:$PORT$2"
    fi
}

# The part of /_membership after "cluster_nodes": the nodes that joined.
cluster_nodes() {
    api GET /_membership | sed -n 's/.*"cluster_nodes":\[\([^]]*\)\].*/\1/p'
}

is_member() {
    case "$(cluster_nodes)" in
    *"\"couchdb@$1\""*) return 0 ;;
    *) return 1 ;;
    esac
}

credentials="\"username\":\"$COUCHDB_USER\",\"password\":\"$COUCHDB_PASSWORD\""

if api GET /_cluster_setup | grep -q '"cluster_finished"'; then
    echo "couchdb-setup: the cluster was set up before"
else
    echo "couchdb-setup: enabling the cluster on $FIRST ($COUNT nodes)"
    api POST /_cluster_setup \
        "{\"action\":\"enable_cluster\",\"bind_address\":\"0.0.0.0\",$credentials,\"node_count\":\"$COUNT\"}" >/dev/null
    shift
    for node in "$@"; do
        if is_member "$node"; then
            echo "couchdb-setup: $node is already a member"
            continue
        fi
        echo "couchdb-setup: adding $node"
        api POST /_cluster_setup \
            "{\"action\":\"enable_cluster\",\"bind_address\":\"0.0.0.0\",$credentials,\"port\":$PORT,\"node_count\":\"$COUNT\",\"remote_node\":\"$node\",\"remote_current_user\":\"$COUCHDB_USER\",\"remote_current_password\":\"$COUCHDB_PASSWORD\"}" >/dev/null
        api POST /_cluster_setup \
            "{\"action\":\"add_node\",\"host\":\"$node\",\"port\":$PORT,$credentials}" >/dev/null
    done
    echo "couchdb-setup: finishing the cluster (system databases)"
    api POST /_cluster_setup '{"action":"finish_cluster"}' >/dev/null
fi

missing=""
for node in $COUCHDB_NODES; do
    is_member "$node" || missing="$missing $node"
done
if [ -n "$missing" ]; then
    echo "couchdb-setup: not cluster members:$missing (/_membership: $(api GET /_membership))" >&2
    exit 1
fi
echo "couchdb-setup: cluster of $COUNT nodes ready: $(cluster_nodes)"

#!/bin/sh
# One-shot: waits for the Temporal server, creates the namespace and registers the custom search
# attributes the campaign workflow upserts (workflows/search_attributes.py; tests/test_compose.py
# checks this list against it). Every command is idempotent.
set -eu

until temporal operator cluster health --address "$TEMPORAL_ADDRESS"; do
  echo "waiting for Temporal at $TEMPORAL_ADDRESS"
  sleep 2
done

temporal operator namespace describe --address "$TEMPORAL_ADDRESS" -n "$NAMESPACE" \
  || temporal operator namespace create --address "$TEMPORAL_ADDRESS" -n "$NAMESPACE" --retention 30d

add() {
  temporal operator search-attribute create --address "$TEMPORAL_ADDRESS" -n "$NAMESPACE" \
    --name "$1" --type "$2"
}
add AccountGroupId Keyword
add CampaignId Keyword
add LeadId Keyword
add HasPendingApproval Bool
add LeadWorkflowStatus Keyword
add LatestStep Keyword
add GateId Keyword
add GateOpenedAt Datetime
add GateExpiresAt Datetime
echo "namespace $NAMESPACE ready"

"""Temporal's OpenTelemetry interceptor, with a signal's trace carried into the work it causes.

The stock `TracingInterceptor` puts everything a workflow does into the trace of the request that
*started* it and only links a signal's trace. Here a signal that carries a trace context (an
approval sent by the API) gets its `HandleSignal` span in that trace, and so do the activities
the workflow schedules in the same workflow task (the delivery an approval releases): the trace
id of the approval's response finds the signal, the query, the delivery and their errors. Later
workflow tasks (a timer firing, the next step's draft) go back to the workflow's own trace.

Subclassing is the extension point the SDK documents for this interceptor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import opentelemetry.context
import opentelemetry.trace
import temporalio.worker
import temporalio.workflow
from temporalio.contrib.opentelemetry import TracingInterceptor, TracingWorkflowInboundInterceptor


class CampaignTracingInterceptor(TracingInterceptor):
    """The SDK's `TracingInterceptor`, with signals traced as this module describes; installed
    the same way, on the client (`campaign_engine.temporal.connect`), and so on every worker
    built from that client."""

    def workflow_interceptor_class(
        self, input: temporalio.worker.WorkflowInterceptorClassInput
    ) -> type[TracingWorkflowInboundInterceptor]:
        """The workflow side: the stock one, but for a traced signal and the activities
        scheduled in its workflow task."""
        super().workflow_interceptor_class(input)
        return _SignalTracingWorkflowInboundInterceptor


class _SignalTracingWorkflowInboundInterceptor(TracingWorkflowInboundInterceptor):
    def __init__(self, next: temporalio.worker.WorkflowInboundInterceptor) -> None:
        super().__init__(next)
        # The trace of the last traced signal, and the workflow task it arrived in. Both are
        # rebuilt on replay (signals are re-delivered), and only feed spans, never commands.
        self._signal_context: opentelemetry.context.Context | None = None
        self._signal_task_history_length = -1

    async def handle_signal(self, input: temporalio.worker.HandleSignalInput) -> None:
        header = input.headers.get(self.header_key)
        if not header:
            await super().handle_signal(input)
            return
        carrier = self.payload_converter.from_payloads([header])[0]
        context = self._set_on_context(self.text_map_propagator.extract(carrier))
        self._signal_context = context
        self._signal_task_history_length = temporalio.workflow.info().get_current_history_length()
        with _attached(context):
            self._completed_span(
                f"HandleSignal:{input.signal}",
                # The workflow's own trace stays one click away.
                link_context_carrier=self._load_workflow_context_carrier(),
                kind=opentelemetry.trace.SpanKind.SERVER,
            )
            # Skips the stock handle_signal, which would open a second span in the start's trace.
            await super(TracingWorkflowInboundInterceptor, self).handle_signal(input)

    def _completed_span(self, span_name: str, **kwargs: Any) -> None:
        # Every workflow-side span goes through here; an activity scheduled in the signal's
        # workflow task is made a child of the signal's trace instead of the workflow's.
        context = self._signal_context_now() if span_name.startswith("StartActivity:") else None
        if context is None:
            super()._completed_span(span_name, **kwargs)
            return
        with _attached(context):
            super()._completed_span(span_name, **kwargs)

    def _signal_context_now(self) -> opentelemetry.context.Context | None:
        """The last traced signal's context while the workflow task it arrived in runs."""
        if self._signal_context is None:
            return None
        if temporalio.workflow.info().get_current_history_length() != (
            self._signal_task_history_length
        ):
            return None
        return self._signal_context


@contextlib.contextmanager
def _attached(context: opentelemetry.context.Context) -> Iterator[None]:
    token = opentelemetry.context.attach(context)
    try:
        yield
    finally:
        # A coroutine of an evicted workflow is finalised wherever garbage collection runs, where
        # the token is not valid: nothing to detach there (the SDK's interceptor does the same).
        with contextlib.suppress(ValueError):
            token.var.reset(token)

"""The developer guide's "SequenceSum" handler (step 1 of
``examples/atp_demo.py``, which defines its own copy), importable from the
package as ``remotetask.atpdemo.handler`` for ``tracker.txt`` and the
tests."""


def handler(taskStatus, input):
    """Sum a sequence of numbers and store the sum as the response."""
    total = 0
    for val in input:
        try:
            total += float(val)
        except (TypeError, ValueError):
            # stop in case of invalid input
            taskStatus.setFailure('Input must be a sequence of numbers!')
            return
    # store the response and terminate
    taskStatus.storeResponse(str(total))

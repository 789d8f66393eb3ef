"""The handler of the ATP demo (``examples/atp_demo.py``), importable by
the worker as ``remotetask.atpdemo.handler``: the developer guide's
"SequenceSum" example."""


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

"""The ATP demo of EOxServer's developer guide (steps 1-7), on remotetask.

Run a worker (the ATP daemon) and the demo against the same database; the
worker imports the handler of step 1 from this file, as ``atp_demo.handler``
(EOxServer's was ``tools.atp_demo.handler``), so this directory is on its
path::

    PYTHONPATH=examples remotetask worker --db zeo://127.0.0.1:8100 \
        --import remotetask.tracker
    python examples/atp_demo.py --db zeo://127.0.0.1:8100 1 2 3 4 5

The only changes from the guide: the import line, ``configure(db)`` in
place of Django's settings, and Python 3.
"""
import argparse
import sys
import time

from remotetask.tracker import (
    QueueFull, configure, deleteTaskByIdentifier, enqueueTask,
    getTaskLog, getTaskResponse, getTaskStatusByIdentifier, registerTaskType)



# Step 1 - Handler Subroutine
def handler(taskStatus, input):
    """ example ATP handler subroutine """
    sum = 0
    # sum the values
    for val in input:
        try:
            sum += float(val)
        except ValueError:
            # stop in case on ivalid input
            taskStatus.setFailure("Input must be a sequence of numbers!")
            return
    # store the response and terminate
    taskStatus.storeResponse(str(sum))


#: The worker imports the handler by this dotted path.
HANDLER = 'atp_demo.handler'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--db', required=True, help='zodburi URI')
    parser.add_argument('--identifier', default='Task001')
    parser.add_argument('--poll', type=float, default=5.0,
                        help='seconds between status polls')
    parser.add_argument('--retry', type=float, default=5.0,
                        help='seconds to wait when the queue is full')
    parser.add_argument('--deadline', type=float, default=600.0,
                        help='give up polling after this many seconds')
    parser.add_argument('--handler', default=HANDLER,
                        help='dotted path of the handler the worker imports '
                             '(default: %(default)s, step 1 of this file)')
    parser.add_argument('--keep', action='store_true',
                        help='do not delete the task at the end (step 7)')
    parser.add_argument('input', nargs='*', default=['1', '2', '3', '4', '5'])
    args = parser.parse_args(argv)
    configure(args.db)
    task = args.identifier

    # Step 2 - New Task Type Registration
    registerTaskType("SequenceSum", args.handler, 60, 600, 3)

    # Step 3 - Creating New Task
    while True:
        try:
            enqueueTask("SequenceSum", task, tuple(args.input))
            break
        except QueueFull:  # retry if queue full
            print("QueueFull!")
            time.sleep(args.retry)

    # Step 4 - Polling the task status
    deadline = time.monotonic() + args.deadline
    while True:
        status = getTaskStatusByIdentifier("SequenceSum", task)
        print(time.asctime(), "Status: ", status[1], flush=True)
        if status[1] in ("FINISHED", "FAILED"):
            break
        if time.monotonic() > deadline:
            print("Gave up waiting: is a worker running?")
            return 2
        time.sleep(args.poll)

    # Step 5 - Getting the logged task history
    print("Processing history:")
    for rec in getTaskLog("SequenceSum", task):
        print("-", rec[0], "Status: ", rec[1][1], "\t", rec[2])

    # Step 6 - Getting the task results
    if status[1] == "FINISHED":
        print("Result: ", getTaskResponse("SequenceSum", task))

    # Step 7 - Removing the task
    if not args.keep:
        deleteTaskByIdentifier("SequenceSum", task)
    return 0 if status[1] == "FINISHED" else 1


if __name__ == '__main__':
    sys.exit(main())

"""Start moto's server with DynamoDB item operations serialised.

moto's threaded server evaluates a DynamoDB ConditionExpression and then
applies the write as two steps, so two concurrent conditional writes can both
succeed; real DynamoDB makes them atomic. jit-runners relies on that
atomicity (one enqueue per job, one claim per job), so the test fixture holds
one lock around every item write, and around reads too: a Query copying an
item while a write changes it fails inside moto ("dictionary changed size
during iteration"). Everything else is moto as shipped.
"""
import functools
import sys
import threading

from moto.dynamodb.models import DynamoDBBackend
import moto.server

_lock = threading.RLock()


def _serialised(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _lock:
            return fn(*args, **kwargs)
    return wrapper


for _name in ("put_item", "update_item", "delete_item", "batch_write_item",
              "transact_write_items", "execute_statement", "execute_transaction",
              "batch_execute_statement", "get_item", "batch_get_item", "query",
              "scan", "transact_get_items"):
    setattr(DynamoDBBackend, _name, _serialised(getattr(DynamoDBBackend, _name)))

if __name__ == "__main__":
    moto.server.main(sys.argv[1:])

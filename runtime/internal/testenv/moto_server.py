"""Start moto's server with DynamoDB item operations serialised.

moto's threaded server evaluates a DynamoDB ConditionExpression and then
applies the write as two steps, so two concurrent conditional writes can both
succeed; real DynamoDB makes them atomic. jit-runners relies on that
atomicity (one enqueue per job, one claim per job), so the test fixture holds
one lock around every item write, and around reads too: a Query copying an
item while a write changes it fails inside moto ("dictionary changed size
during iteration"). And a transaction backs up only the items it names
rather than deep-copying whole tables (see _transact_backing_up_items).
Everything else is moto as shipped.
"""
import copy
import functools
import sys
import threading
import types

import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
import moto.server

_lock = threading.RLock()

_transact_write_items = DynamoDBBackend.transact_write_items


def _transact_backing_up_items(self, transact_items):
    """TransactWriteItems with a backup of the items it names only.

    moto backs up every table a transaction names with a deep copy, for its
    rollback: a cost that grows with the table (the whole jobs table per
    launch). Only the items the transaction names can change, so the backup
    here copies those and shares the rest: the same rollback, the same
    answers. Runs under _lock, so swapping the module's copy is safe.
    """
    touched = {}
    for entry in transact_items:
        _, op = next(iter(entry.items()))
        table = self.tables.get(op.get("TableName"))
        attrs = op.get("Item") or op.get("Key") or {}
        if table is not None and table.hash_key_attr in attrs:
            touched.setdefault(table.name, set()).add(DynamoType(attrs[table.hash_key_attr]))

    def backup(obj, memo=None):
        if isinstance(obj, Table) and obj.name in touched:
            clone = copy.copy(obj)
            clone.items = copy.copy(obj.items)
            for key in touched[obj.name]:
                if key in obj.items:
                    clone.items[key] = copy.deepcopy(obj.items[key])
                else:
                    clone.items.pop(key, None)
            return clone
        return copy.deepcopy(obj, memo)

    dynamodb_models.copy = types.SimpleNamespace(deepcopy=backup, copy=copy.copy)
    try:
        return _transact_write_items(self, transact_items)
    finally:
        dynamodb_models.copy = copy


DynamoDBBackend.transact_write_items = _transact_backing_up_items


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

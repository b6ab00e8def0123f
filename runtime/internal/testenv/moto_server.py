"""Start moto's server with DynamoDB item operations serialised, and EC2's
instance-type catalogue paged as EC2 pages it.

moto's threaded server evaluates a DynamoDB ConditionExpression and then
applies the write as two steps, so two concurrent conditional writes can both
succeed; real DynamoDB makes them atomic. jit-runners relies on that
atomicity (one enqueue per job, one claim per job), so the test fixture holds
one lock around every item write, and around reads too: a Query copying an
item while a write changes it fails inside moto ("dictionary changed size
during iteration"). And a transaction backs up only the items it names
rather than deep-copying whole tables (see _transact_backing_up_items).

moto answers DescribeInstanceTypes and DescribeInstanceTypeOfferings with
every match in one page and ignores MaxResults and NextToken; EC2 pages them
(at most 100 instance types and 1000 offerings a page, 100 and 1000 when
MaxResults is absent) and rejects a MaxResults out of range. A caller that
reads only the first page would see every instance type on moto and only
100 of them on EC2, so both answers are paged here as EC2 pages them, with
an opaque NextToken (see _paged).
Everything else is moto as shipped.
"""
import base64
import copy
import functools
import hashlib
import json
import sys
import threading
import types

import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.ec2.exceptions import EC2ClientError, InvalidNextToken
from moto.ec2.responses.instances import InstanceResponse
from moto.core.responses import ActionResult
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



def _paged(key, low, high):
    """Page the list under key of a moto answer as EC2 does.

    MaxResults must lie in [low, high] (InvalidParameterValue otherwise, as
    EC2 answers) and is high when absent. NextToken is opaque to the caller:
    the offset of the next page and a digest of the request's other
    parameters, so a token replayed with other filters is refused
    (InvalidNextToken) instead of paging a different list.
    """
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(self):
            raw = self._get_param("MaxResults")
            try:
                size = high if raw is None else int(raw)
            except ValueError:
                size = -1
            if not low <= size <= high:
                raise EC2ClientError(
                    "InvalidParameterValue",
                    f"Value ( {raw} ) for parameter maxResults is invalid. "
                    f"Parameter must be between {low} and {high}.",
                )
            scope = hashlib.sha256(json.dumps(
                sorted((k, v) for k, v in self.querystring.items()
                       if k not in ("MaxResults", "NextToken")),
            ).encode()).hexdigest()[:16]
            token = self._get_param("NextToken")
            start = 0
            if token:
                try:
                    state = json.loads(base64.urlsafe_b64decode(token.encode()))
                    start, ok = int(state["o"]), state["s"] == scope
                except (ValueError, KeyError, TypeError):
                    ok = False
                if not ok or start < 0:
                    raise InvalidNextToken(token)
            result = dict(fn(self).result)
            items = result[key]
            result[key] = items[start:start + size]
            if start + size < len(items):
                state = json.dumps({"o": start + size, "s": scope}).encode()
                result["NextToken"] = base64.urlsafe_b64encode(state).decode()
            return ActionResult(result)
        return wrapper
    return decorate


InstanceResponse.describe_instance_types = _paged("InstanceTypes", 5, 100)(
    InstanceResponse.describe_instance_types)
InstanceResponse.describe_instance_type_offerings = _paged(
    "InstanceTypeOfferings", 5, 1000)(InstanceResponse.describe_instance_type_offerings)

if __name__ == "__main__":
    moto.server.main(sys.argv[1:])

"""The live sale in Redis. `Inventory` is the only code of the service that speaks Redis."""

from flashsale.stores.inventory.answers import (
    CheckoutAnswer,
    OutboxEntry,
    PurchaseAnswer,
    QueueLength,
    QueuePlace,
    SaleFigures,
)
from flashsale.stores.inventory.connect import connect
from flashsale.stores.inventory.gateway import Inventory, InventoryError

__all__ = [
    "CheckoutAnswer",
    "Inventory",
    "InventoryError",
    "OutboxEntry",
    "PurchaseAnswer",
    "QueueLength",
    "QueuePlace",
    "SaleFigures",
    "connect",
]

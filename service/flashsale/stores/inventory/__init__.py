"""The live sale in Redis. `Inventory` is the only code of the service that speaks Redis."""

from flashsale.stores.inventory.connect import connect
from flashsale.stores.inventory.gateway import (
    CheckoutAnswer,
    Inventory,
    InventoryError,
    OutboxEntry,
    PurchaseAnswer,
    QueueLength,
    QueuePlace,
    SaleFigures,
)

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

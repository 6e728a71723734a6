"""The sandbox's GraphQL layer: the committed SDL, resolvers over the store, and Wave-shaped output values."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from graphql import GraphQLEnumType, GraphQLSchema, build_schema

from sandboxes.wave.store import (
    Account,
    Business,
    Customer,
    InputErrors,
    Invoice,
    Product,
    QueryError,
    WaveStore,
    paginate,
)
from sandboxes.wave.values import (
    PROVINCE_NAMES,
    currency_exponent,
    format_date,
    format_datetime,
    format_decimal,
    money_value,
    parse_date,
    parse_datetime,
)

SCHEMA_PATH = Path(__file__).with_name("schema.graphql")

_ACCOUNT_TYPES = {"INCOME": ("Income", "CREDIT"), "EXPENSE": ("Expense", "DEBIT")}
_ACCOUNT_SUBTYPES = {"INCOME": "Income", "EXPENSE": "Operating Expense", "COST_OF_GOODS_SOLD": "Cost of Goods Sold"}
# Customer's optional String fields: Wave answers "" for an unset one (captured bodies, reference notes §16).
_CUSTOMER_STRINGS = (
    "firstName",
    "lastName",
    "displayId",
    "email",
    "mobile",
    "phone",
    "fax",
    "tollFree",
    "website",
    "internalNotes",
)


@cache
def schema_sdl() -> str:
    return SCHEMA_PATH.read_text(encoding="utf-8")


def enum_descriptions(schema: GraphQLSchema, name: str) -> dict[str, str]:
    """Enum value -> its description (Wave describes CountryCode/CurrencyCode values with their names)."""
    enum = schema.type_map[name]
    assert isinstance(enum, GraphQLEnumType)
    return {key: value.description or key for key, value in enum.values.items()}


def _dt(value: Any, argument: str) -> Any:
    if value is None:
        return None
    parsed = parse_datetime(value)
    if parsed is None:
        raise QueryError("BAD_USER_INPUT", f"Argument '{argument}' expects an ISO-8601 DateTime, got {value!r}.")
    return parsed


def _date(value: Any, argument: str) -> Any:
    if value is None:
        return None
    parsed = parse_date(value)
    if parsed is None:
        raise QueryError("BAD_USER_INPUT", f"Argument '{argument}' expects a Date (yyyy-MM-dd), got {value!r}.")
    return parsed


class Renderer:
    """Turns store records into the dicts graphql-core's default resolver reads (callables take arguments)."""

    def __init__(self, store: WaveStore, currency_names: dict[str, str], country_names: dict[str, str]) -> None:
        self.store = store
        self.currency_names = currency_names
        self.country_names = country_names
        self.legacy = store.config.legacy_shapes

    def decimal(self, value: Decimal) -> str:
        return format_decimal(value, padded=self.legacy)

    def currency(self, code: str | None) -> dict[str, Any] | None:
        if code is None:
            return None
        return {"code": code, "name": self.currency_names.get(code, code), "exponent": currency_exponent(code)}

    def money(self, amount: Decimal, currency: str) -> dict[str, Any]:
        raw, value = money_value(amount, currency)
        return {"raw": raw, "value": value, "currency": self.currency(currency)}

    def address(self, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        province, country = value.get("provinceCode"), value.get("countryCode")
        return {
            "addressLine1": value.get("addressLine1"),
            "addressLine2": value.get("addressLine2"),
            "city": value.get("city"),
            "postalCode": value.get("postalCode"),
            "province": {"code": province, "name": PROVINCE_NAMES.get(province, province)} if province else None,
            "country": {"code": country, "name": self.country_names.get(country, country)} if country else None,
        }

    def customer(self, business: Business, customer: Customer) -> dict[str, Any]:
        fields = customer.fields
        shipping = fields.get("shippingDetails")
        unset = None if self.legacy else ""
        return {
            "id": business.gid("Customer", customer.number),
            "name": fields.get("name"),
            **{key: unset if fields.get(key) is None else fields[key] for key in _CUSTOMER_STRINGS},
            "currency": self.currency(fields.get("currency")),
            "address": self.address(fields.get("address")),
            "shippingDetails": None
            if shipping is None
            else {**shipping, "address": self.address(shipping.get("address"))},
            "createdAt": format_datetime(customer.created_at),
            "modifiedAt": format_datetime(customer.modified_at),
            "isArchived": customer.is_archived,
        }

    def account(self, business: Business, account: Account | None) -> dict[str, Any] | None:
        if account is None:
            return None
        type_name, balance = _ACCOUNT_TYPES[account.type_value]
        return {
            "id": business.gid("Account", account.number),
            "name": account.name,
            "description": account.description,
            "isArchived": account.is_archived,
            "normalBalanceType": balance,
            "type": {"name": type_name, "value": account.type_value, "normalBalanceType": balance},
            "subtype": {"name": _ACCOUNT_SUBTYPES[account.subtype_value], "value": account.subtype_value},
        }

    def product(self, business: Business, product: Product) -> dict[str, Any]:
        income = business.accounts.get(product.income_account) if product.income_account else None
        expense = business.accounts.get(product.expense_account) if product.expense_account else None
        return {
            "id": business.gid("Product", product.number),
            "name": product.name,
            "description": product.description,
            "unitPrice": self.decimal(product.unit_price),
            "isSold": product.income_account is not None,
            "isBought": product.expense_account is not None,
            "isArchived": product.is_archived,
            "createdAt": format_datetime(product.created_at),
            "modifiedAt": format_datetime(product.modified_at),
            "incomeAccount": self.account(business, income),
            "expenseAccount": self.account(business, expense),
        }

    def invoice(self, business: Business, invoice: Invoice) -> dict[str, Any]:
        totals = self.store.totals(invoice)
        currency = invoice.currency
        zero = Decimal(0)
        items = [
            {
                "product": self.product(business, business.products[item.product]),
                "description": item.description,
                "quantity": self.decimal(item.quantity),
                "price": self.decimal(item.unit_price),
                "unitPrice": self.decimal(item.unit_price),
                "subtotal": self.money(subtotal, currency),
                "total": self.money(subtotal, currency),
            }
            for item, subtotal in zip(invoice.items, totals.subtotals, strict=True)
        ]
        base = f"https://next.waveapps.com/{business.uuid}/invoices/{invoice.number}"
        return {
            "id": business.gid("Invoice", invoice.number),
            "customer": self.customer(business, business.customers[invoice.customer]),
            "createdAt": format_datetime(invoice.created_at),
            "modifiedAt": format_datetime(invoice.modified_at),
            "pdfUrl": f"{base}/pdf",
            "viewUrl": f"{base}/view",
            "status": self.store.status(invoice),
            "invoiceNumber": invoice.invoice_number,
            "invoiceDate": format_date(invoice.invoice_date),
            "dueDate": format_date(invoice.due_date),
            "amountDue": self.money(totals.due, currency),
            "amountPaid": self.money(totals.paid, currency),
            "taxTotal": self.money(zero, currency),
            "total": self.money(totals.total, currency),
            "currency": self.currency(currency),
            "exchangeRate": self.decimal(invoice.exchange_rate),
            "items": items,
            **invoice.text,
            **invoice.flags,
            "lastSentAt": format_datetime(invoice.last_sent_at) if invoice.last_sent_at else None,
            "lastSentVia": invoice.last_sent_via,
            "lastViewedAt": format_datetime(invoice.last_viewed_at) if invoice.last_viewed_at else None,
        }

    def business(self, business: Business) -> dict[str, Any]:
        store = self.store

        def connection(records: list[Any], render: Callable[[Any], Any], page: int, page_size: int) -> Any:
            rows, info = paginate(
                records, max(page, 1), store.page_size(page_size), empty_pages=0 if self.legacy else 1
            )
            return {"pageInfo": info, "edges": [{"node": render(r)} for r in rows]}

        def customers(_info: Any, **args: Any) -> Any:
            found = store.list_customers(
                business,
                args["sort"],
                email=args.get("email"),
                after=_dt(args.get("modifiedAtAfter"), "modifiedAtAfter"),
                before=_dt(args.get("modifiedAtBefore"), "modifiedAtBefore"),
            )
            return connection(found, lambda c: self.customer(business, c), args["page"], args["pageSize"])

        def products(_info: Any, **args: Any) -> Any:
            found = store.list_products(
                business,
                args["sort"],
                is_sold=args.get("isSold"),
                is_bought=args.get("isBought"),
                is_archived=args.get("isArchived"),
                after=_dt(args.get("modifiedAtAfter"), "modifiedAtAfter"),
                before=_dt(args.get("modifiedAtBefore"), "modifiedAtBefore"),
            )
            return connection(found, lambda p: self.product(business, p), args["page"], args["pageSize"])

        def invoices(_info: Any, **args: Any) -> Any:
            found = store.list_invoices(
                business,
                args["sort"],
                status=args.get("status"),
                customer_id=args.get("customerId"),
                currency=args.get("currency"),
                source_id=args.get("sourceId"),
                date_start=_date(args.get("invoiceDateStart"), "invoiceDateStart"),
                date_end=_date(args.get("invoiceDateEnd"), "invoiceDateEnd"),
                after=_dt(args.get("modifiedAtAfter"), "modifiedAtAfter"),
                before=_dt(args.get("modifiedAtBefore"), "modifiedAtBefore"),
                invoice_number=args.get("invoiceNumber"),
            )
            return connection(found, lambda i: self.invoice(business, i), args["page"], args["pageSize"])

        def accounts(_info: Any, **args: Any) -> Any:
            types, subtypes, archived = args.get("types"), args.get("subtypes"), args.get("isArchived")
            found = [
                a
                for a in business.accounts.values()
                if (not types or a.type_value in types)
                and (not subtypes or a.subtype_value in subtypes)
                and (archived is None or a.is_archived == archived)
            ]
            return connection(found, lambda a: self.account(business, a), args["page"], args["pageSize"])

        return {
            "id": business.global_id,
            "name": business.name,
            "currency": self.currency(business.currency),
            "timezone": business.timezone,
            "isPersonal": False,
            "isClassicAccounting": False,
            "isClassicInvoicing": business.is_classic_invoicing,
            "isArchived": business.is_archived,
            "createdAt": format_datetime(business.created_at),
            "modifiedAt": format_datetime(business.created_at),
            "customer": lambda _info, id: self.customer(*store.customer(id, business)),
            "product": lambda _info, id: self.product(*store.product(id, business)),
            "invoice": lambda _info, id: self.invoice(*store.invoice(id, business)),
            "account": lambda _info, id: self.account(business, store.account(id, business)),
            "customers": customers,
            "products": products,
            "invoices": invoices,
            "accounts": accounts,
        }


def _payload(key: str | None, action: Callable[[], Any]) -> dict[str, Any]:
    """A mutation's Output: the entity and didSucceed, or didSucceed false with inputErrors."""
    try:
        entity = action()
    except InputErrors as exc:
        result: dict[str, Any] = {"didSucceed": False, "inputErrors": [e.as_json() for e in exc.errors]}
        if key:
            result[key] = None
        return result
    result = {"didSucceed": True, "inputErrors": []}
    if key:
        result[key] = entity
    return result


def build_executable_schema(store: WaveStore, schema: GraphQLSchema) -> GraphQLSchema:
    """Attach resolvers for Query.business and every mutation to a freshly built `schema`."""
    render = Renderer(store, enum_descriptions(schema, "CurrencyCode"), enum_descriptions(schema, "CountryCode"))
    assert schema.query_type is not None
    assert schema.mutation_type is not None
    schema.query_type.fields["business"].resolve = lambda _root, _info, id=None: render.business(
        store.business(str(id))
    )
    customer, product, invoice = render.customer, render.product, render.invoice
    mutations: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
        "customerCreate": lambda i: _payload("customer", lambda: customer(*store.create_customer(i))),
        "customerPatch": lambda i: _payload("customer", lambda: customer(*store.patch_customer(i))),
        "customerDelete": lambda i: _payload(None, lambda: store.delete_customer(str(i["id"]))),
        "productCreate": lambda i: _payload("product", lambda: product(*store.create_product(i))),
        "productPatch": lambda i: _payload("product", lambda: product(*store.patch_product(i))),
        "productArchive": lambda i: _payload("product", lambda: product(*store.archive_product(str(i["id"])))),
        "invoiceCreate": lambda i: _payload("invoice", lambda: invoice(*store.create_invoice(i))),
        "invoicePatch": lambda i: _payload("invoice", lambda: invoice(*store.patch_invoice(i))),
        "invoiceDelete": lambda i: _payload(None, lambda: store.delete_invoice(str(i["invoiceId"]))),
        "invoiceApprove": lambda i: _payload("invoice", lambda: invoice(*store.approve_invoice(str(i["invoiceId"])))),
        "invoiceMarkSent": lambda i: _payload(
            "invoice", lambda: invoice(*store.mark_sent(str(i["invoiceId"]), i["sendMethod"], i.get("sentAt")))
        ),
        "invoiceSend": lambda i: _payload(None, lambda: store.send_invoice(i)),
    }
    for name, handler in mutations.items():
        schema.mutation_type.fields[name].resolve = lambda _root, _info, input, _h=handler: _h(input)
    return schema


def new_schema() -> GraphQLSchema:
    return build_schema(schema_sdl())

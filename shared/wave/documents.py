"""Every GraphQL document wavesync sends to Wave, as named constants (String arguments always via variables).

A contract test validates each constant against the reference Wave schema and the sandbox SDL. Each document
carries only the fragments it uses (GraphQL rejects unused fragments).
"""

from __future__ import annotations

INPUT_ERRORS = "didSucceed inputErrors { path message code }"

ADDRESS_FIELDS = """
fragment AddressFields on Address {
  addressLine1 addressLine2 city postalCode
  province { code name }
  country { code name }
}
"""

CUSTOMER_FIELDS = (
    """
fragment CustomerFields on Customer {
  id name firstName lastName displayId email mobile phone fax tollFree website internalNotes
  currency { code }
  address { ...AddressFields }
  shippingDetails { name phone instructions address { ...AddressFields } }
  createdAt modifiedAt isArchived
}
"""
    + ADDRESS_FIELDS
)

PRODUCT_FIELDS = """
fragment ProductFields on Product {
  id name description unitPrice isSold isBought isArchived createdAt modifiedAt
  incomeAccount { id }
  expenseAccount { id }
}
"""

INVOICE_FIELDS = """
fragment InvoiceFields on Invoice {
  id status title subhead invoiceNumber poNumber invoiceDate dueDate memo footer exchangeRate
  currency { code }
  customer { id }
  items { product { id } description quantity unitPrice subtotal { value } total { value } }
  total { value currency { code } }
  amountDue { value }
  amountPaid { value }
  taxTotal { value }
  createdAt modifiedAt lastSentAt lastSentVia viewUrl pdfUrl
}
"""

PAGE_INFO = "pageInfo { currentPage totalPages totalCount }"

BUSINESS = """
query Business($businessId: ID!) {
  business(id: $businessId) { id name timezone isArchived isClassicInvoicing currency { code } }
}
"""

ACCOUNTS_PAGE = f"""
query AccountsPage($businessId: ID!, $page: Int!, $pageSize: Int!, $types: [AccountTypeValue!]) {{
  business(id: $businessId) {{
    id
    accounts(page: $page, pageSize: $pageSize, types: $types) {{
      {PAGE_INFO}
      edges {{ node {{ id name description isArchived type {{ value }} subtype {{ value }} }} }}
    }}
  }}
}}
"""

# ----- customers ---------------------------------------------------------------------------------------------------

CUSTOMERS_PAGE = (
    f"""
query CustomersPage(
  $businessId: ID!, $page: Int!, $pageSize: Int!, $sort: [CustomerSort!]!,
  $email: String, $modifiedAtAfter: DateTime, $modifiedAtBefore: DateTime
) {{
  business(id: $businessId) {{
    id
    customers(
      page: $page, pageSize: $pageSize, sort: $sort, email: $email,
      modifiedAtAfter: $modifiedAtAfter, modifiedAtBefore: $modifiedAtBefore
    ) {{
      {PAGE_INFO}
      edges {{ node {{ ...CustomerFields }} }}
    }}
  }}
}}
"""
    + CUSTOMER_FIELDS
)

CUSTOMER_GET = (
    """
query Customer($businessId: ID!, $id: ID!) {
  business(id: $businessId) { id customer(id: $id) { ...CustomerFields } }
}
"""
    + CUSTOMER_FIELDS
)

CUSTOMER_CREATE = (
    f"""
mutation CustomerCreate($input: CustomerCreateInput!) {{
  customerCreate(input: $input) {{ {INPUT_ERRORS} customer {{ ...CustomerFields }} }}
}}
"""
    + CUSTOMER_FIELDS
)

CUSTOMER_PATCH = (
    f"""
mutation CustomerPatch($input: CustomerPatchInput!) {{
  customerPatch(input: $input) {{ {INPUT_ERRORS} customer {{ ...CustomerFields }} }}
}}
"""
    + CUSTOMER_FIELDS
)

CUSTOMER_DELETE = f"""
mutation CustomerDelete($input: CustomerDeleteInput!) {{
  customerDelete(input: $input) {{ {INPUT_ERRORS} }}
}}
"""

# ----- products ----------------------------------------------------------------------------------------------------

PRODUCTS_PAGE = (
    f"""
query ProductsPage(
  $businessId: ID!, $page: Int!, $pageSize: Int!, $sort: [ProductSort!]!,
  $isArchived: Boolean, $modifiedAtAfter: DateTime, $modifiedAtBefore: DateTime
) {{
  business(id: $businessId) {{
    id
    products(
      page: $page, pageSize: $pageSize, sort: $sort, isArchived: $isArchived,
      modifiedAtAfter: $modifiedAtAfter, modifiedAtBefore: $modifiedAtBefore
    ) {{
      {PAGE_INFO}
      edges {{ node {{ ...ProductFields }} }}
    }}
  }}
}}
"""
    + PRODUCT_FIELDS
)

PRODUCT_GET = (
    """
query Product($businessId: ID!, $id: ID!) {
  business(id: $businessId) { id product(id: $id) { ...ProductFields } }
}
"""
    + PRODUCT_FIELDS
)

PRODUCT_CREATE = (
    f"""
mutation ProductCreate($input: ProductCreateInput!) {{
  productCreate(input: $input) {{ {INPUT_ERRORS} product {{ ...ProductFields }} }}
}}
"""
    + PRODUCT_FIELDS
)

PRODUCT_PATCH = (
    f"""
mutation ProductPatch($input: ProductPatchInput!) {{
  productPatch(input: $input) {{ {INPUT_ERRORS} product {{ ...ProductFields }} }}
}}
"""
    + PRODUCT_FIELDS
)

PRODUCT_ARCHIVE = (
    f"""
mutation ProductArchive($input: ProductArchiveInput!) {{
  productArchive(input: $input) {{ {INPUT_ERRORS} product {{ ...ProductFields }} }}
}}
"""
    + PRODUCT_FIELDS
)

# ----- invoices ----------------------------------------------------------------------------------------------------

INVOICES_PAGE = (
    f"""
query InvoicesPage(
  $businessId: ID!, $page: Int!, $pageSize: Int!, $sort: [InvoiceSort!]!,
  $invoiceNumber: String, $customerId: ID, $modifiedAtAfter: DateTime, $modifiedAtBefore: DateTime
) {{
  business(id: $businessId) {{
    id
    invoices(
      page: $page, pageSize: $pageSize, sort: $sort, invoiceNumber: $invoiceNumber, customerId: $customerId,
      modifiedAtAfter: $modifiedAtAfter, modifiedAtBefore: $modifiedAtBefore
    ) {{
      {PAGE_INFO}
      edges {{ node {{ ...InvoiceFields }} }}
    }}
  }}
}}
"""
    + INVOICE_FIELDS
)

INVOICE_GET = (
    """
query Invoice($businessId: ID!, $id: ID!) {
  business(id: $businessId) { id invoice(id: $id) { ...InvoiceFields } }
}
"""
    + INVOICE_FIELDS
)

INVOICE_CREATE = (
    f"""
mutation InvoiceCreate($input: InvoiceCreateInput!) {{
  invoiceCreate(input: $input) {{ {INPUT_ERRORS} invoice {{ ...InvoiceFields }} }}
}}
"""
    + INVOICE_FIELDS
)

INVOICE_PATCH = (
    f"""
mutation InvoicePatch($input: InvoicePatchInput!) {{
  invoicePatch(input: $input) {{ {INPUT_ERRORS} invoice {{ ...InvoiceFields }} }}
}}
"""
    + INVOICE_FIELDS
)

INVOICE_DELETE = f"""
mutation InvoiceDelete($input: InvoiceDeleteInput!) {{
  invoiceDelete(input: $input) {{ {INPUT_ERRORS} }}
}}
"""

INVOICE_APPROVE = (
    f"""
mutation InvoiceApprove($input: InvoiceApproveInput!) {{
  invoiceApprove(input: $input) {{ {INPUT_ERRORS} invoice {{ ...InvoiceFields }} }}
}}
"""
    + INVOICE_FIELDS
)

INVOICE_MARK_SENT = (
    f"""
mutation InvoiceMarkSent($input: InvoiceMarkSentInput!) {{
  invoiceMarkSent(input: $input) {{ {INPUT_ERRORS} invoice {{ ...InvoiceFields }} }}
}}
"""
    + INVOICE_FIELDS
)

# ----- natural keys ------------------------------------------------------------------------------------------------
# What the key index (shared/natural_keys.py) lists: per record its id, when it changed and its natural keys only. A
# listing of full records (an invoice's items and amounts, a customer's addresses) cost the worker most of its CPU
# in parsing and validating fields it never reads, and Wave the work of rendering them.

CUSTOMER_KEYS_PAGE = f"""
query CustomerKeysPage(
  $businessId: ID!, $page: Int!, $pageSize: Int!, $sort: [CustomerSort!]!, $modifiedAtAfter: DateTime
) {{
  business(id: $businessId) {{
    id
    customers(page: $page, pageSize: $pageSize, sort: $sort, modifiedAtAfter: $modifiedAtAfter) {{
      {PAGE_INFO}
      edges {{ node {{ id modifiedAt email displayId }} }}
    }}
  }}
}}
"""

PRODUCT_KEYS_PAGE = f"""
query ProductKeysPage(
  $businessId: ID!, $page: Int!, $pageSize: Int!, $sort: [ProductSort!]!, $isArchived: Boolean,
  $modifiedAtAfter: DateTime
) {{
  business(id: $businessId) {{
    id
    products(
      page: $page, pageSize: $pageSize, sort: $sort, isArchived: $isArchived, modifiedAtAfter: $modifiedAtAfter
    ) {{
      {PAGE_INFO}
      edges {{ node {{ id modifiedAt name }} }}
    }}
  }}
}}
"""

INVOICE_KEYS_PAGE = f"""
query InvoiceKeysPage(
  $businessId: ID!, $page: Int!, $pageSize: Int!, $sort: [InvoiceSort!]!, $modifiedAtAfter: DateTime
) {{
  business(id: $businessId) {{
    id
    invoices(page: $page, pageSize: $pageSize, sort: $sort, modifiedAtAfter: $modifiedAtAfter) {{
      {PAGE_INFO}
      edges {{ node {{ id modifiedAt invoiceNumber }} }}
    }}
  }}
}}
"""

# Every operation the client sends, by constant name (the contract test walks this).
ALL_DOCUMENTS: dict[str, str] = {
    "BUSINESS": BUSINESS,
    "ACCOUNTS_PAGE": ACCOUNTS_PAGE,
    "CUSTOMERS_PAGE": CUSTOMERS_PAGE,
    "CUSTOMER_GET": CUSTOMER_GET,
    "CUSTOMER_CREATE": CUSTOMER_CREATE,
    "CUSTOMER_PATCH": CUSTOMER_PATCH,
    "CUSTOMER_DELETE": CUSTOMER_DELETE,
    "PRODUCTS_PAGE": PRODUCTS_PAGE,
    "PRODUCT_GET": PRODUCT_GET,
    "PRODUCT_CREATE": PRODUCT_CREATE,
    "PRODUCT_PATCH": PRODUCT_PATCH,
    "PRODUCT_ARCHIVE": PRODUCT_ARCHIVE,
    "INVOICES_PAGE": INVOICES_PAGE,
    "INVOICE_GET": INVOICE_GET,
    "INVOICE_CREATE": INVOICE_CREATE,
    "INVOICE_PATCH": INVOICE_PATCH,
    "INVOICE_DELETE": INVOICE_DELETE,
    "INVOICE_APPROVE": INVOICE_APPROVE,
    "INVOICE_MARK_SENT": INVOICE_MARK_SENT,
    "CUSTOMER_KEYS_PAGE": CUSTOMER_KEYS_PAGE,
    "PRODUCT_KEYS_PAGE": PRODUCT_KEYS_PAGE,
    "INVOICE_KEYS_PAGE": INVOICE_KEYS_PAGE,
}

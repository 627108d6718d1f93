"""Realistic Koywe document lines for demos, tests and benchmarks (deterministic per seed).

A line is one JSON object of the inbox format::

    {"reference": "TXN-0000-000001", "account_id": 4201, "document": <POST /documents payload>}

The document has no ``header.issue_date`` (the pipeline stamps the run's issue date) and no
``references[]`` (the pipeline adds the internal reference, code 5, from ``reference``).

Countries and documents (Koywe ids, currencies, precision, tax id types and Peru series from
:mod:`koywe_provider.catalogue`; taxes, units and phone numbers are this generator's):

* ``CL``: factura (2) / boleta (37), IVA 387 19 %, CLP (39), whole pesos, unit ``UN``;
* ``PE``: factura (96, series F001) / boleta (97, B001), IGV 413 18 %, PEN (7), 2 dp, unit ``NIU``,
  ``additional.pe_header.operation_type`` "0101";
* ``CO``: factura (82), IVA 388 19 %, COP (28), whole pesos, unit ``UN``;
* ``MX``: ingreso (76), IVA 362 16 %, MXN (31), 2 dp, unit ``UN``, ``additional.mx_header``.

Tax ids carry correct check digits (python-stdnum ``calc_check_digit``). Generation streams: memory
does not grow with ``count``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from decimal import Decimal

from stdnum.cl import rut
from stdnum.co import nit
from stdnum.mx import rfc
from stdnum.pe import ruc

from koywe_provider.catalogue import country_by_iso_code, currency, document_type

__all__ = [
    "COUNTRIES",
    "DEFAULT_ACCOUNT_IDS",
    "INVALID_KINDS",
    "VARIED_SCENARIOS",
    "generate_invalid_lines",
    "generate_lines",
    "generate_varied_lines",
]

COUNTRIES = ("CL", "PE", "CO", "MX")
#: One sample Koywe account per country (Koywe demo account ids).
DEFAULT_ACCOUNT_IDS = {"CL": 4201, "PE": 16268, "CO": 14540, "MX": 11857}


def _num(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


# --------------------------------------------------------------------------------------------------
# Tax ids with correct check digits
# --------------------------------------------------------------------------------------------------


def _rut(rng: random.Random, company: bool) -> str:
    body = str(rng.randint(76_000_000, 77_999_999) if company else rng.randint(5_000_000, 25_999_999))
    return f"{body}-{rut.calc_check_digit(body)}"


def _ruc(rng: random.Random) -> str:
    body = f"20{rng.randint(10_000_000, 99_999_999)}"
    return body + ruc.calc_check_digit(body)


def _dni(rng: random.Random) -> str:
    return f"{rng.randint(10_000_000, 79_999_999)}"


def _nit(rng: random.Random) -> str:
    body = str(rng.randint(800_000_000, 901_999_999))
    return f"{body}-{nit.calc_check_digit(body)}"


_RFC_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_HOMOCLAVE = "123456789ABCDEFGHIJKLMNPQRSTUVWXYZ"


def _rfc(rng: random.Random, initials: str) -> str:
    initials = "".join(ch for ch in initials.upper() if ch in _RFC_LETTERS)
    letters = (initials + "".join(rng.choice(_RFC_LETTERS) for _ in range(3)))[:3]
    date = f"{rng.randint(0, 23):02d}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    body = letters + date + rng.choice(_HOMOCLAVE) + rng.choice(_HOMOCLAVE)
    return body + rfc.calc_check_digit(body)


# --------------------------------------------------------------------------------------------------
# Reference data
# --------------------------------------------------------------------------------------------------

_NAME_HEADS = (
    "Comercial",
    "Distribuidora",
    "Inversiones",
    "Servicios",
    "Constructora",
    "Importadora",
    "Agrícola",
    "Transportes",
    "Ferretería",
    "Panificadora",
    "Textiles",
    "Laboratorio",
    "Consultora",
    "Librería",
    "Inmobiliaria",
    "Ópticas",
    "Clínica Dental",
    "Farmacia",
)
_NAME_TAILS = (
    "del Pacífico",
    "Los Andes",
    "San Martín",
    "Santa Rosa",
    "del Sur",
    "Nueva Esperanza",
    "El Roble",
    "La Esperanza",
    "Los Alerces",
    "Cordillera",
    "Monte Verde",
    "Río Claro",
    "Bahía Azul",
    "Altamira",
    "Las Palmas",
    "Del Valle",
    "Horizonte",
    "Vista Hermosa",
)
_FIRST_NAMES = (
    "María",
    "José",
    "Camila",
    "Juan",
    "Valentina",
    "Luis",
    "Fernanda",
    "Carlos",
    "Daniela",
    "Jorge",
    "Sofía",
    "Andrés",
    "Paula",
    "Diego",
    "Carolina",
    "Miguel",
    "Lucía",
    "Ricardo",
)
_LAST_NAMES = (
    "González",
    "Muñoz",
    "Rojas",
    "Díaz",
    "Pérez",
    "Soto",
    "Contreras",
    "Silva",
    "Martínez",
    "Sepúlveda",
    "Morales",
    "Rodríguez",
    "López",
    "Fuentes",
    "Hernández",
    "Torres",
    "Araya",
    "Flores",
    "Castillo",
    "Quispe",
    "Huamán",
    "Ramírez",
    "Vargas",
    "García",
)
_ACTIVITIES = (
    "Venta al por mayor de alimentos",
    "Comercio al por menor de artículos de ferretería",
    "Actividades de consultoría de gestión",
    "Transporte de carga por carretera",
    "Construcción de edificios",
    "Venta al por menor de productos farmacéuticos",
    "Servicios de informática",
    "Restaurantes y servicios de comida",
    "Fabricación de muebles",
    "Actividades de contabilidad",
)
_STREETS = {
    "CL": (
        "Av. Providencia",
        "Calle Los Carrera",
        "Av. Libertador Bernardo O'Higgins",
        "Av. Vicuña Mackenna",
        "Calle Moneda",
        "Av. Pedro de Valdivia",
        "Calle Prat",
        "Av. Alemania",
    ),
    "PE": (
        "Av. Arequipa",
        "Jr. de la Unión",
        "Av. Javier Prado Este",
        "Av. La Marina",
        "Calle Las Begonias",
        "Av. Ejército",
        "Jr. Junín",
        "Av. Benavides",
    ),
    "CO": (
        "Carrera 7",
        "Calle 72",
        "Carrera 43A",
        "Avenida 6N",
        "Calle 100",
        "Carrera 15",
        "Calle 53",
        "Avenida El Dorado",
    ),
    "MX": (
        "Av. Insurgentes Sur",
        "Paseo de la Reforma",
        "Av. Revolución",
        "Calle Hidalgo",
        "Av. Juárez",
        "Calle Morelos",
        "Av. Vallarta",
        "Blvd. Constitución",
    ),
}

# city, district/colonia/county, department or state, postal code
_CITIES = {
    "CL": (
        ("Santiago", "Providencia", "Región Metropolitana", "7500000"),
        ("Santiago", "Las Condes", "Región Metropolitana", "7550000"),
        ("Valparaíso", "Valparaíso", "Valparaíso", "2340000"),
        ("Concepción", "Concepción", "Biobío", "4030000"),
        ("Antofagasta", "Antofagasta", "Antofagasta", "1240000"),
        ("Temuco", "Temuco", "Araucanía", "4780000"),
        ("La Serena", "La Serena", "Coquimbo", "1700000"),
    ),
    "PE": (
        ("Lima", "Miraflores", "Lima", "15074"),
        ("Lima", "San Isidro", "Lima", "15036"),
        ("Lima", "Surco", "Lima", "15023"),
        ("Arequipa", "Yanahuara", "Arequipa", "04017"),
        ("Trujillo", "Trujillo", "La Libertad", "13001"),
        ("Cusco", "Wanchaq", "Cusco", "08002"),
        ("Piura", "Castilla", "Piura", "20003"),
    ),
    "CO": (
        ("Bogotá", "Chapinero", "11001", "110221"),
        ("Medellín", "El Poblado", "05001", "050021"),
        ("Cali", "Granada", "76001", "760045"),
        ("Barranquilla", "El Prado", "08001", "080020"),
        ("Bucaramanga", "Cabecera", "68001", "680003"),
        ("Cartagena", "Bocagrande", "13001", "130001"),
    ),
    "MX": (
        ("Ciudad de México", "Del Valle", "CMX", "03100"),
        ("Ciudad de México", "Polanco", "CMX", "11560"),
        ("Guadalajara", "Americana", "JAL", "44160"),
        ("Monterrey", "Centro", "NLE", "64000"),
        ("Puebla", "La Paz", "PUE", "72160"),
        ("Querétaro", "Centro", "QUE", "76000"),
        ("Mérida", "García Ginerés", "YUC", "97070"),
    ),
}

# description, unit price range (in the document currency)
_PRODUCTS = (
    ("Resma papel carta 75 g (500 hojas)", 4, 9),
    ("Tóner impresora láser negro", 45, 120),
    ("Servicio de mantención de aire acondicionado", 60, 300),
    ("Licencia anual software de contabilidad", 150, 900),
    ("Silla ergonómica de oficina", 90, 350),
    ("Café en grano tostado 1 kg", 10, 30),
    ("Agua mineral sin gas 1,5 L (pack 6)", 3, 8),
    ("Servicio de transporte de carga local", 80, 600),
    ("Casco de seguridad certificado", 8, 25),
    ("Guantes de nitrilo caja 100 unidades", 6, 15),
    ("Horas de consultoría tributaria", 40, 150),
    ("Cable UTP categoría 6 (rollo 305 m)", 70, 180),
    ("Mouse inalámbrico", 8, 30),
    ("Monitor LED 24 pulgadas", 110, 260),
    ("Arriendo de equipo de sonido por día", 50, 200),
    ("Curso de capacitación en seguridad laboral", 100, 500),
    ("Detergente industrial 5 L", 9, 22),
    ("Mantención preventiva de vehículo", 70, 250),
)
# multiplier from the ranges above (roughly USD) to each currency
_PRICE_FACTOR = {"CL": 950, "PE": Decimal("3.75"), "CO": 4000, "MX": Decimal("18.5")}


def _sample_country(
    iso_code: str,
    types: tuple[int, ...],
    *,
    tax: int,
    rate: int,
    unit: str,
    phone: tuple[tuple[str, ...], int],
    suffixes: tuple[str, ...],
) -> dict:
    """What the generator draws for one country: Koywe ids, currency and company tax id type from
    the catalogue; tax type and rate, unit, phone numbers (prefixes, E.164 length) and company
    suffixes of its own."""
    country = country_by_iso_code(iso_code)
    for type_id in types:
        if document_type(type_id).country_id != country.country_id:
            raise ValueError(f"document type {type_id} is not issued in {country.name}")
    if not all(prefix.startswith(country.phone_prefix) for prefix in phone[0]):
        raise ValueError(f"phone prefixes {phone[0]} are not {country.name}'s {country.phone_prefix}")
    money = currency(country.currency_id)
    return {
        "types": types,
        "currency": money.currency_id,
        "quantize": money.quantize,
        "tax": tax,
        "rate": rate,
        "unit": unit,
        "places": money.decimals,
        "country_id": country.country_id,
        "phone": phone,
        "tax_id_type": country.tax_id_types[0],
        "suffixes": suffixes,
    }


_COUNTRY = {
    "CL": _sample_country(
        "CL",
        (2, 37),
        tax=387,
        rate=19,
        unit="UN",
        phone=(("+56994", "+56995", "+56996", "+56998"), 12),
        suffixes=("SpA", "Ltda.", "S.A."),
    ),
    "PE": _sample_country(
        "PE",
        (96, 97),
        tax=413,
        rate=18,
        unit="NIU",
        phone=(("+5194", "+5195", "+5196", "+5197", "+5198", "+5199"), 12),
        suffixes=("S.A.C.", "E.I.R.L.", "S.A."),
    ),
    "CO": _sample_country(
        "CO",
        (82,),
        tax=388,
        rate=19,
        unit="UN",
        phone=(("+57300", "+57301", "+57310", "+57311", "+57315", "+57320", "+57321"), 13),
        suffixes=("S.A.S.", "Ltda.", "S.A."),
    ),
    "MX": _sample_country(
        "MX",
        (76,),
        tax=362,
        rate=16,
        unit="UN",
        phone=(("+5255", "+5233", "+5281", "+52222", "+52442"), 13),
        suffixes=("S.A. de C.V.", "S. de R.L. de C.V.", "S.A.P.I. de C.V."),
    ),
}

# The issuer of each sample account (fixed: an account is one company). Valid check digits.
_ISSUERS = {
    "CL": {
        "issuer_tax_id_type": _COUNTRY["CL"]["tax_id_type"],
        "issuer_tax_id_code": f"76543210-{rut.calc_check_digit('76543210')}",
        "issuer_legal_name": "Comercializadora Cordillera Sur SpA",
        "issuer_address": "Av. Apoquindo 4501, of. 1203",
        "issuer_district": "Las Condes",
        "issuer_city": "Santiago",
        "issuer_country_id": _COUNTRY["CL"]["country_id"],
        "issuer_phone": "+56223456789",
        "issuer_activity": "Venta al por mayor de artículos de oficina",
    },
    "PE": {
        "issuer_tax_id_type": _COUNTRY["PE"]["tax_id_type"],
        "issuer_tax_id_code": "2060123456" + ruc.calc_check_digit("2060123456"),
        "issuer_legal_name": "Distribuidora Andina del Pacífico S.A.C.",
        "issuer_address": "Av. Javier Prado Este 2465",
        "issuer_district": "San Borja",
        "issuer_city": "Lima",
        "issuer_department": "LIMA",
        "issuer_country_id": _COUNTRY["PE"]["country_id"],
        "issuer_phone": "+5116123456",
        "issuer_activity": "Venta al por mayor de otros productos",
        "issuer_postalcode": "15037",
    },
    "CO": {
        "issuer_tax_id_type": _COUNTRY["CO"]["tax_id_type"],
        "issuer_tax_id_code": f"901234567-{nit.calc_check_digit('901234567')}",
        "issuer_legal_name": "Soluciones Empresariales del Caribe S.A.S.",
        "issuer_address": "Carrera 11 # 93-45",
        "issuer_district": "Chicó",
        "issuer_city": "Bogotá",
        "issuer_country_id": _COUNTRY["CO"]["country_id"],
        "issuer_phone": "+576017654321",
        "issuer_activity": "4651",
        "issuer_postalcode": "110221",
    },
    "MX": {
        "issuer_tax_id_type": _COUNTRY["MX"]["tax_id_type"],
        "issuer_tax_id_code": "CBA150312PQ" + rfc.calc_check_digit("CBA150312PQ"),
        "issuer_legal_name": "Comercializadora del Bajío S.A. de C.V.",
        "issuer_address": "Blvd. Bernardo Quintana 4100",
        "issuer_city": "Querétaro",
        "issuer_country_id": _COUNTRY["MX"]["country_id"],
        "issuer_phone": "+524422345678",
        "issuer_activity": "601",
        "issuer_postalcode": "76090",
    },
}


# --------------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------------


def _company_name(rng: random.Random, country: str) -> str:
    return f"{rng.choice(_NAME_HEADS)} {rng.choice(_NAME_TAILS)} {rng.choice(_COUNTRY[country]['suffixes'])}"


def _person_name(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)} {rng.choice(_LAST_NAMES)}"


_ASCII = str.maketrans("áéíóúñüÁÉÍÓÚÑÜ", "aeiounuAEIOUNU")


def _ascii(text: str) -> str:
    return text.translate(_ASCII)


def _email(rng: random.Random, name: str) -> str:
    plain = _ascii(name.lower())
    slug = "".join(ch for ch in plain if ch.isalnum() or ch == " ").split()
    return (
        f"{slug[0]}.{slug[1]}{rng.randint(1, 99)}@{rng.choice(('gmail.com', 'outlook.com', 'empresa.com'))}"
    )


def _receiver(rng: random.Random, country: str, document_type_id: int) -> dict:
    city, district, region, postal = rng.choice(_CITIES[country])
    street = rng.choice(_STREETS[country])
    if country == "CO":
        address = f"{street} # {rng.randint(1, 140)}-{rng.randint(1, 99):02d}"
    else:
        address = f"{street} {rng.randint(10, 9999)}"
    spec = _COUNTRY[country]
    prefixes, length = spec["phone"]  # E.164: mobile/area prefixes, full length
    prefix = rng.choice(prefixes)
    phone = (
        prefix
        + str(rng.randint(2, 9))
        + "".join(str(rng.randint(0, 9)) for _ in range(length - len(prefix) - 1))
    )
    receiver: dict = {"receiver_address": address, "receiver_city": city, "receiver_phone": phone}
    consumer = document_type(document_type_id).kind == "receipt"
    if country == "CL":
        if consumer:  # boleta: a consumer
            name = _person_name(rng)
            receiver |= {
                "receiver_tax_id_code": _rut(rng, company=False),
                "receiver_legal_name": name,
                "receiver_activity": "Particular",
                "receiver_email": _email(rng, name),
            }
        else:
            receiver |= {
                "receiver_tax_id_code": _rut(rng, company=True),
                "receiver_legal_name": _company_name(rng, country),
                "receiver_activity": rng.choice(_ACTIVITIES),
            }
        receiver |= {
            "receiver_tax_id_type": spec["tax_id_type"],
            "receiver_district": district,
            "receiver_country_id": spec["country_id"],
        }
    elif country == "PE":
        if consumer:  # boleta: a consumer identified by DNI
            name = _person_name(rng)
            receiver |= {
                "receiver_tax_id_type": "PE-DNI",
                "receiver_tax_id_code": _dni(rng),
                "receiver_legal_name": name,
                "receiver_email": _email(rng, name),
            }
        else:
            receiver |= {
                "receiver_tax_id_type": spec["tax_id_type"],
                "receiver_tax_id_code": _ruc(rng),
                "receiver_legal_name": _company_name(rng, country),
                "receiver_activity": rng.choice(_ACTIVITIES),
            }
        receiver |= {
            "receiver_district": district,
            "receiver_department": region.upper(),
            "receiver_postalcode": postal,
            "receiver_country_id": spec["country_id"],
        }
    elif country == "CO":
        receiver |= {
            "receiver_tax_id_type": spec["tax_id_type"],
            "receiver_tax_id_code": _nit(rng),
            "receiver_legal_name": _company_name(rng, country),
            "receiver_district": district,
            "receiver_county_id": region,
            "receiver_postalcode": postal,
            "receiver_activity": rng.choice(_ACTIVITIES),
            "receiver_country_id": spec["country_id"],
        }
    else:
        # CFDI 4.0: the receiver name as in the SAT record, upper case, without the company regime.
        name = f"{rng.choice(_NAME_HEADS)} {rng.choice(_NAME_TAILS)}"
        words = [w for w in _ascii(name).upper().split() if w not in ("DE", "DEL", "LA", "LOS", "LAS", "EL")]
        receiver |= {
            "receiver_tax_id_type": spec["tax_id_type"],
            "receiver_tax_id_code": _rfc(rng, "".join(w[0] for w in words)),
            "receiver_legal_name": name.upper(),
            "receiver_district": district,
            "receiver_postalcode": postal,
            "receiver_activity": "601",
            "receiver_country_id": spec["country_id"],
        }
    return receiver


_CONSUMER_PRODUCTS = tuple(p for p in _PRODUCTS if p[2] <= 120)


def _details(rng: random.Random, country: str, consumer: bool) -> tuple[list[dict], Decimal, Decimal]:
    spec = _COUNTRY[country]
    places, rate, factor = spec["places"], Decimal(spec["rate"]), Decimal(_PRICE_FACTOR[country])
    money = spec["quantize"]  # half-up to the currency's places
    details: list[dict] = []
    net_total = tax_total = Decimal(0)
    products = _CONSUMER_PRODUCTS if consumer else _PRODUCTS
    for description, low, high in rng.sample(products, rng.randint(1, 4)):
        base = Decimal(rng.randint(low * 100, high * 100)) / 100 * factor
        price = money(base)
        if places == 0:  # whole pesos ending in 0 or 90, as shops price them
            price = max(Decimal(10), (price // 10) * 10)
        quantity = rng.choice((1, 1, 1, 2, 3) if consumer else (1, 1, 2, 2, 3, 5, 10, 12))
        line: dict = {
            "quantity": quantity,
            "line_description": description,
            "unit_measure": spec["unit"],
            "unit_price": _num(price),
        }
        net = Decimal(quantity) * price
        roll = rng.random()
        if roll < 0.12:  # percentage discount
            pct = Decimal(rng.choice((-5, -10, -15)))
            line["modifier_percentage"] = int(pct)
            net = net * (1 + pct / 100)
        elif roll < 0.18:  # fixed discount
            discount = money(net * Decimal("0.03"))
            if discount > 0:
                line["modifier_amount"] = _num(-discount)
                net -= discount
        net = money(net)
        tax = money(net * rate / 100)
        line |= {
            "total_taxes": _num(tax),
            "total_amount_line": _num(net + tax),
            "taxes": [{"tax_type_id": spec["tax"], "tax_percentage": spec["rate"], "tax_amount": _num(tax)}],
        }
        details.append(line)
        net_total += net
        tax_total += tax
    return details, net_total, tax_total


def _document(rng: random.Random, country: str, account_id: int) -> dict:
    spec = _COUNTRY[country]
    document_type_id = rng.choice(spec["types"])
    kind = document_type(document_type_id)
    header: dict = {"account_id": account_id, "document_type_id": document_type_id}
    if kind.series_prefix:  # Peru: F001 facturas, B001 boletas
        header["document_sequence_code"] = f"{kind.series_prefix}001"
    header |= _ISSUERS[country]
    header |= _receiver(rng, country, document_type_id)
    header |= {
        "payment_conditions": rng.choice(("0", "0", "30")) if kind.kind == "invoice" else "0",
        "currency_id": spec["currency"],
    }
    if country == "PE":
        header["additional"] = {"pe_header": {"operation_type": "0101"}}
    elif country == "MX":
        header["additional"] = {
            "mx_header": {
                "receiver_cfdi_usage": rng.choice(("G01", "G03", "G03")),
                "reported_payment_code": rng.choice(("01", "03", "04", "28")),
            }
        }
    details, net, tax = _details(rng, country, consumer=kind.kind == "receipt")
    return {
        "header": header,
        "details": details,
        "totals": {"net_amount": _num(net), "taxes_amount": _num(tax), "total_amount": _num(net + tax)},
    }


def _reference(prefix: str, seed: int, n: int) -> str:
    return f"{prefix}-{seed:04d}-{n:06d}"


def generate_lines(
    count: int,
    *,
    seed: int = 0,
    countries: Sequence[str] = COUNTRIES,
    account_ids: dict[str, int] | None = None,
    reference_prefix: str = "TXN",
) -> Iterator[dict]:
    """Yield ``count`` valid inbox lines ``{"reference", "account_id", "document"}`` (streaming).

    :param seed: same seed, same lines. References are ``<prefix>-<seed:04d>-<n:06d>`` (n from 1),
        unique for one ``(prefix, seed)``.
    :param countries: drawn uniformly per line among ``CL``, ``PE``, ``CO``, ``MX``.
    :param account_ids: Koywe account per country; defaults to :data:`DEFAULT_ACCOUNT_IDS`.
    :raises ValueError: unknown country or negative count.
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    unknown = [c for c in countries if c not in _COUNTRY]
    if unknown or not countries:
        raise ValueError(f"unknown countries {unknown}; expected some of {COUNTRIES}")
    accounts = DEFAULT_ACCOUNT_IDS | (account_ids or {})
    rng = random.Random(seed)
    countries = tuple(countries)
    for n in range(1, count + 1):
        country = rng.choice(countries)
        account_id = accounts[country]
        yield {
            "reference": _reference(reference_prefix, seed, n),
            "account_id": account_id,
            "document": _document(rng, country, account_id),
        }


#: Kinds of invalid lines produced by :func:`generate_invalid_lines`, in order.
INVALID_KINDS = (
    "not_json",
    "missing_reference",
    "missing_document",
    "invalid_rut_check_digit",
    "inconsistent_totals",
    "missing_document_field",
)


def generate_invalid_lines(seed: int = 0, *, reference_prefix: str = "INV") -> list[str]:
    """One raw text line per kind of :data:`INVALID_KINDS` (same order), each wrong in one way.

    * ``not_json``: a truncated JSON object (reference ``<prefix>-<seed>-000001`` in its text);
    * ``missing_reference``: a valid Colombian line without ``reference``;
    * ``missing_document``: ``reference`` and ``account_id`` but no ``document``;
    * ``invalid_rut_check_digit``: Chilean factura whose ``header.receiver_tax_id_code`` has a wrong DV;
    * ``inconsistent_totals``: Peruvian document whose ``totals.total_amount`` is 10.00 too high;
    * ``missing_document_field``: Mexican document whose ``details.0.unit_price`` is missing.

    References (where present) are distinct and do not collide with :func:`generate_lines`.
    """
    rng = random.Random(seed)
    lines: list[str] = []

    def make(country: str, n: int) -> dict:
        account_id = DEFAULT_ACCOUNT_IDS[country]
        document = _document(rng, country, account_id)
        return {
            "reference": _reference(reference_prefix, seed, n),
            "account_id": account_id,
            "document": document,
        }

    broken = json.dumps(make("CL", 1), ensure_ascii=False)
    lines.append(broken[: len(broken) // 2])

    line = make("CO", 2)
    del line["reference"]
    lines.append(json.dumps(line, ensure_ascii=False))

    line = make("MX", 3)
    del line["document"]
    lines.append(json.dumps(line, ensure_ascii=False))

    line = make("CL", 4)
    header = line["document"]["header"]
    while document_type(header["document_type_id"]).kind != "invoice":  # a factura, not a boleta
        line = make("CL", 4)
        header = line["document"]["header"]
    body, dv = header["receiver_tax_id_code"].split("-")
    digits = "0123456789K"
    header["receiver_tax_id_code"] = f"{body}-{digits[(digits.index(dv) + 1) % len(digits)]}"
    lines.append(json.dumps(line, ensure_ascii=False))

    line = make("PE", 5)
    totals = line["document"]["totals"]
    totals["total_amount"] = _num(Decimal(str(totals["total_amount"])) + 10)
    lines.append(json.dumps(line, ensure_ascii=False))

    line = make("MX", 6)
    del line["document"]["details"][0]["unit_price"]
    lines.append(json.dumps(line, ensure_ascii=False))
    return lines


# --------------------------------------------------------------------------------------------------
# A varied set: every kind of valid document the country rules must accept
# --------------------------------------------------------------------------------------------------

#: Scenarios of :func:`generate_varied_lines` per country (drawn uniformly).
VARIED_SCENARIOS = {
    "CL": ("factura", "factura_exenta", "boleta", "boleta_gross", "boleta_exenta", "export"),
    "PE": ("factura", "factura_usd", "boleta_anonymous", "boleta_dni", "export"),
    "CO": ("factura_mixed_rates", "factura_usd", "pos", "foreign_receiver"),
    "MX": ("ingreso", "ingreso_ieps", "ingreso_usd", "publico_en_general", "border_rate", "egreso"),
}
_USD, _EUR = 5, 38
_FOREIGN_RECEIVERS = (
    ("US-EIN", "851855616", "Pacific Imports LLC", 89),
    ("MX-RFC", "222333444", "Importadora del Norte", 80),
    ("BR-CNPJ", "11222333000181", "Comércio Paulista Ltda.", None),
)


def _tax_lines(
    rng: random.Random,
    *,
    places: int,
    factor: Decimal,
    unit: str,
    taxes: Sequence[tuple[int, Decimal]] | None,
    consumer: bool = False,
    gross: bool = False,
    rates_per_line: Sequence[Sequence[tuple[int, Decimal]]] | None = None,
) -> tuple[list[dict], Decimal, Decimal]:
    """1-4 lines; each line's taxes are ``taxes`` (or one of ``rates_per_line``), every amount rounded
    half-up to ``places`` exactly as the country rules check it. Returns (lines, Σ nets, Σ taxes); with
    ``gross`` the prices include the tax and Σ nets is the gross total."""
    unit_amount = Decimal(1).scaleb(-places)

    def money(value: Decimal) -> Decimal:
        return value.quantize(unit_amount, rounding="ROUND_HALF_UP")

    products = _CONSUMER_PRODUCTS if consumer else _PRODUCTS
    lines: list[dict] = []
    net_total = tax_total = Decimal(0)
    for description, low, high in rng.sample(products, rng.randint(1, 4)):
        price = money(Decimal(rng.randint(low * 100, high * 100)) / 100 * factor)
        if places == 0:
            price = max(Decimal(10), (price // 10) * 10)
        quantity = rng.choice((1, 1, 2, 3) if consumer else (1, 2, 3, 5, 10, 12))
        line: dict = {
            "quantity": quantity,
            "line_description": description,
            "unit_measure": unit,
            "unit_price": _num(price),
        }
        raw = Decimal(quantity) * price
        roll = rng.random()
        if roll < 0.15:
            pct = Decimal(rng.choice((-5, -10, -12.5)))
            line["modifier_percentage"] = _num(pct)
            raw = raw * (1 + pct / 100)
        elif roll < 0.25:
            discount = money(raw * Decimal("0.03"))
            if discount > 0:
                line["modifier_amount"] = _num(-discount)
                raw -= discount
        net = money(raw)
        chosen = rng.choice(rates_per_line) if rates_per_line else (taxes or ())
        line_taxes = []
        for tax_type_id, rate in chosen:
            amount = money(net * rate / 100) if not gross else money(net - net / (1 + rate / 100))
            line_taxes.append(
                {"tax_type_id": tax_type_id, "tax_percentage": _num(rate), "tax_amount": _num(amount)}
            )
        tax = sum((Decimal(str(t["tax_amount"])) for t in line_taxes), Decimal(0))
        if gross:
            line |= {"total_amount_line": _num(net), "taxes": line_taxes}
        else:
            line |= {"total_taxes": _num(tax), "total_amount_line": _num(net + tax), "taxes": line_taxes}
        lines.append(line)
        net_total += net
        tax_total += tax
    return lines, net_total, tax_total


def _foreign_receiver(rng: random.Random) -> dict:
    kind, code, name, country_id = rng.choice(_FOREIGN_RECEIVERS)
    receiver = {
        "receiver_tax_id_type": kind,
        "receiver_tax_id_code": code,
        "receiver_legal_name": name,
        "receiver_address": f"{rng.randint(100, 9999)} Harbor Street",
        "receiver_city": "Miami",
    }
    if country_id:
        receiver["receiver_country_id"] = country_id
    return receiver


def _varied_document(rng: random.Random, country: str, account_id: int) -> tuple[str, dict]:
    spec = _COUNTRY[country]
    scenario = rng.choice(VARIED_SCENARIOS[country])
    places, currency_id, factor = spec["places"], spec["currency"], Decimal(_PRICE_FACTOR[country])
    unit, options, extra_header = spec["unit"], None, {}
    rate = Decimal(spec["rate"])
    taxes: list[tuple[int, Decimal]] | None = [(spec["tax"], rate)]
    rates_per_line = None
    consumer = gross = False
    receiver: dict | None = None
    if country == "CL":
        type_id = {
            "factura": 2,
            "factura_exenta": 32,
            "boleta": 37,
            "boleta_gross": 37,
            "boleta_exenta": 41,
        }.get(scenario, 46)
        consumer = type_id in (37, 41)
        if type_id in (32, 41, 46):
            taxes = None
        if scenario == "boleta_gross":
            gross, options = True, {"gross_values": 1}
        if scenario == "export":
            currency_id, places, factor = rng.choice((_USD, _EUR)), 2, Decimal(1)
            receiver = _foreign_receiver(rng)
    elif country == "PE":
        type_id = 97 if scenario.startswith("boleta") else 96
        consumer = type_id == 97
        if scenario == "factura_usd":
            currency_id, factor = _USD, Decimal(1)
        elif scenario == "export":
            currency_id, factor, taxes = _USD, Decimal(1), [(425, Decimal(0))]
            receiver = _foreign_receiver(rng)
            extra_header["additional"] = {"pe_header": {"operation_type": "0200"}}
    elif country == "CO":
        type_id = 87 if scenario == "pos" else 82
        consumer = type_id == 87
        if scenario == "factura_mixed_rates":
            rates_per_line = [[(388, Decimal(19))], [(388, Decimal(5))], [(388, Decimal(0))]]
        elif scenario == "factura_usd":
            currency_id, places, factor = _USD, 2, Decimal(1)
            extra_header["exchange_rate_value"] = 4100
        elif scenario == "foreign_receiver":
            receiver = {
                "receiver_tax_id_type": "CO-NOP",
                "receiver_tax_id_code": str(rng.randint(100_000_000, 999_999_999)),
                "receiver_legal_name": "Andes Trading Inc.",
                "receiver_address": "1200 Brickell Avenue",
                "receiver_city": "Miami",
                "receiver_country_id": 89,
            }
    else:  # MX
        type_id = 77 if scenario == "egreso" else 76
        if scenario == "ingreso_ieps":
            taxes = [(362, Decimal(16)), (368, Decimal(rng.choice((3, 8, 25))))]
        elif scenario == "border_rate":
            taxes = [(362, Decimal(8))]
        elif scenario == "ingreso_usd":
            currency_id, factor = _USD, Decimal(1)
            extra_header["exchange_rate_value"] = "18.4512"
        elif scenario == "publico_en_general":
            consumer = True

    details, net, tax = _tax_lines(
        rng,
        places=places,
        factor=factor,
        unit=unit,
        taxes=taxes,
        consumer=consumer,
        gross=gross,
        rates_per_line=rates_per_line,
    )
    kind = document_type(type_id)
    header: dict = {"account_id": account_id, "document_type_id": type_id}
    if kind.series_prefix:
        header["document_sequence_code"] = f"{kind.series_prefix}001"
    header |= _ISSUERS[country]
    if receiver is None:
        receiver = _receiver(rng, country, type_id)
    if country == "PE" and scenario == "boleta_anonymous":
        receiver = {}
    if country == "MX" and scenario == "publico_en_general":
        receiver = {
            **receiver,
            "receiver_tax_id_code": "XAXX010101000",
            "receiver_legal_name": "PUBLICO EN GENERAL",
        }
    if country == "PE" and type_id == 97 and not receiver and net + tax > 700:
        receiver = _receiver(rng, country, type_id)  # SUNAT: a boleta over S/ 700 names its buyer
    header |= receiver
    header |= {"payment_conditions": "0", "currency_id": currency_id}
    if country == "PE":
        header["additional"] = extra_header.pop("additional", {"pe_header": {"operation_type": "0101"}})
    elif country == "MX":
        usage = "S01" if scenario == "publico_en_general" else rng.choice(("G01", "G03"))
        header["additional"] = {"mx_header": {"receiver_cfdi_usage": usage, "reported_payment_code": "01"}}
    header |= extra_header
    document: dict = {"header": header, "details": details}
    if gross:
        document["totals"] = {"total_amount": _num(net)}
    else:
        document["totals"] = {
            "net_amount": _num(net),
            "taxes_amount": _num(tax),
            "total_amount": _num(net + tax),
        }
    if options:
        document["options"] = options
    return scenario, document


def generate_varied_lines(
    count: int,
    *,
    seed: int = 0,
    countries: Sequence[str] = COUNTRIES,
    reference_prefix: str = "VAR",
) -> Iterator[dict]:
    """Yield ``count`` valid inbox lines drawn from :data:`VARIED_SCENARIOS` (streaming, deterministic).

    Beyond :func:`generate_lines`' facturas and boletas: Chile exempt facturas and boletas, boletas priced
    VAT included (``options.gross_values``), exports in USD/EUR to foreign receivers; Peru facturas in
    USD, anonymous boletas under S/ 700 (a buyer's DNI above), exports (IGV 425 at 0 %, operation 0200);
    Colombia lines at IVA 19, 5 and 0 %, facturas in USD, POS documents, foreign receivers (CO-NOP);
    Mexico IVA with IEPS, the border rate (8 %), USD, "público en general" (XAXX010101000) and egresos.
    Each line carries ``"scenario"`` (ignored by the pipeline). No ``header.issue_date``.
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    unknown = [c for c in countries if c not in _COUNTRY]
    if unknown or not countries:
        raise ValueError(f"unknown countries {unknown}; expected some of {COUNTRIES}")
    rng = random.Random(seed)
    for n in range(1, count + 1):
        country = rng.choice(tuple(countries))
        account_id = DEFAULT_ACCOUNT_IDS[country]
        scenario, document = _varied_document(rng, country, account_id)
        yield {
            "reference": _reference(reference_prefix, seed, n),
            "account_id": account_id,
            "scenario": f"{country}:{scenario}",
            "document": document,
        }

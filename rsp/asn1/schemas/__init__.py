"""ASN.1 modules (data files) compiled by rsp.asn1; a package only so that wheels ship them."""

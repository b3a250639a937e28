SUMMARY = "Deployment and State Manager: TR-181 Device.SoftwareModules. provider for RDK-B"
DESCRIPTION = "dsm-tr181 installs OCI bundle DeploymentUnits (file/http/https) and runs their \
ExecutionUnits as containers through Dobby or an OCI runtime (crun, runc). It serves \
Device.SoftwareModules. on rbus (or D-Bus) for the USP agent and the TR-069 PA, with \
InstallDU()/Update()/Uninstall()/SetRequestedState() and DUStateChange!."
HOMEPAGE = "https://github.com/rdkcentral/dsm-tr181"
LICENSE = "Apache-2.0 & BSD-3-Clause"
# Apache-2.0: the code; BSD-3-Clause: the Broadband Forum data-model files in datamodel/.
LIC_FILES_CHKSUM = " \
    file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57 \
    file://datamodel/LICENSE-BBF;md5=848799db4cda247593de0e39aa56b523 \
"

SRC_URI = "git://github.com/rdkcentral/dsm-tr181.git;protocol=https;branch=main"
SRCREV = "${AUTOREV}"
PV = "0.1.0+git${SRCPV}"
S = "${WORKDIR}/git"

inherit setuptools3 systemd useradd

# Build: the package is pure Python (cffi in ABI mode: librbus is dlopen()ed at run time).
DEPENDS += "python3-setuptools-native python3-wheel-native"

RDEPENDS:${PN} += " \
    python3-core python3-asyncio python3-json python3-logging python3-sqlite3 python3-io \
    python3-netclient python3-compression python3-shell python3-ctypes python3-tomllib \
    python3-lxml python3-cffi python3-cryptography python3-pygobject python3-pydbus \
    python3-pyroute2 python3-asn1crypto \
    busybox \
"
# The runtime and the bus: Dobby (which runs crun) and rbus on RDK-B. Images without
# Dobby can use crun or runc directly (see /etc/dsm/dsm.toml).
RDEPENDS:${PN} += "rbus dobby"
RRECOMMENDS:${PN} += "crun dbus"

SYSTEMD_SERVICE:${PN} = "dsm.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system dsm"

do_install:append() {
    install -d ${D}${systemd_system_unitdir} ${D}${sysconfdir}/dsm ${D}${sysconfdir}/dbus-1/system.d
    install -m 0644 ${S}/integration/dsm.service ${D}${systemd_system_unitdir}/dsm.service
    install -m 0644 ${S}/integration/dsm-rdkb.toml ${D}${sysconfdir}/dsm/dsm.toml
    install -m 0644 ${S}/integration/com.rdkcentral.DSM.conf ${D}${sysconfdir}/dbus-1/system.d/com.rdkcentral.DSM.conf
    install -d ${D}${datadir}/dsm-tr181/datamodel
    install -m 0644 ${S}/datamodel/*.xml ${D}${datadir}/dsm-tr181/datamodel/
    install -d ${D}${datadir}/dsm-tr181/datamodel/vendor
    install -m 0644 ${S}/datamodel/vendor/*.xml ${D}${datadir}/dsm-tr181/datamodel/vendor/
}

FILES:${PN} += " \
    ${systemd_system_unitdir}/dsm.service \
    ${sysconfdir}/dsm/dsm.toml \
    ${sysconfdir}/dbus-1/system.d/com.rdkcentral.DSM.conf \
    ${datadir}/dsm-tr181 \
"
CONFFILES:${PN} = "${sysconfdir}/dsm/dsm.toml"

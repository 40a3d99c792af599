// msi-migrator as a scheduled Azure Automation runbook: the Bicep source of azuredeploy.json.
//
// It declares the same resources, parameters and outputs as runbooks/azuredeploy.json, which
// is the file that is deployed and tested (tests/unit/test_runbook_deploy.py). This file was
// written by hand to match it and has NOT been compiled here (no bicep CLI on the build
// machine): run `az bicep build --file runbooks/main.bicep` and diff before relying on it.
//
// A resource-group deployment cannot grant what the migration itself needs: ARM roles on the
// subscriptions to migrate and Microsoft Graph app roles. Grant those to the `principalId`
// output as runbooks/README.md lists.

@description('Region of every resource. The subscriptions to migrate can be anywhere in the tenant: the runbook reaches them through ARM, scoped by the roles its identity is granted there (runbooks/README.md), not by this deployment\'s resource group or subscription.')
param location string = resourceGroup().location

@description('Storage account for plans, reports, approvals.json, the stash (blob container) and the journal (table). Globally unique, 3-24 lowercase letters and digits.')
@minLength(3)
@maxLength(24)
param storageAccountName string = 'msimig${uniqueString(resourceGroup().id)}'

@description('Redundancy of the storage account that holds the journal: losing it loses the record of what was changed.')
@allowed(['Standard_LRS', 'Standard_ZRS', 'Standard_GRS', 'Standard_GZRS'])
param storageSku string = 'Standard_ZRS'

@description('Blob container: plans/, approvals.json, stash/, locks/.')
param containerName string = 'msi-migrator'

@description('Table that holds the journal (letters and digits only).')
param tableName string = 'migratorjournal'

@description('Automation account; its system-assigned identity is the principal that migrates.')
param automationAccountName string = 'msi-migrator-${uniqueString(resourceGroup().id)}'

@description('Turn off the account\'s local authentication (webhooks, agent-based hybrid workers). The runbook signs in with its managed identity either way.')
param disableLocalAuth bool = false

@description('Python 3.10 runtime environment that holds the wheels.')
param runtimeEnvironmentName string = 'msi-migrator-python310'

@description('Name of the runbook.')
param runbookName string = 'msi-migrator'

@description('false: deploy only storage, account, runtime environment and roles (a first pass, so the wheels can be uploaded to this template\'s own storage account); true: also the packages, the runbook and its schedule link.')
param deployRunbook bool = true

@description('HTTPS URL of the folder that holds the wheels, ending in \'/\'. Each package\'s content link is this + the wheel\'s file name + artifactsSasToken.')
param packagesBaseUri string = ''

@description('Wheel file names to import, one package each (named after its distribution). `python runbooks/package.py --dest DIR` writes the current list to DIR/wheels.parameters.json: pass that file to the deployment rather than relying on this default.')
param wheels array = [
  'aiohappyeyeballs-2.7.1-py3-none-any.whl'
  'aiohttp-3.14.5-cp310-cp310-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl'
  'aiosignal-1.4.0-py3-none-any.whl'
  'annotated_doc-0.0.6-py3-none-any.whl'
  'annotated_types-0.8.0-py3-none-any.whl'
  'anyio-4.16.0-py3-none-any.whl'
  'async_timeout-5.0.1-py3-none-any.whl'
  'attrs-26.1.0-py3-none-any.whl'
  'azure_common-1.1.28-py2.py3-none-any.whl'
  'azure_core-1.41.0-py3-none-any.whl'
  'azure_data_tables-12.7.0-py3-none-any.whl'
  'azure_identity-1.27.0-py3-none-any.whl'
  'azure_mgmt_authorization-4.0.0-py3-none-any.whl'
  'azure_mgmt_core-1.6.0-py3-none-any.whl'
  'azure_mgmt_keyvault-14.1.0-py3-none-any.whl'
  'azure_mgmt_msi-7.1.0-py3-none-any.whl'
  'azure_mgmt_resource_subscriptions-1.0.0-py3-none-any.whl'
  'azure_mgmt_web-11.0.1-py3-none-any.whl'
  'azure_storage_blob-12.31.1-py3-none-any.whl'
  'certifi-2026.10.19.post1-py3-none-any.whl'
  'cffi-2.1.1-cp310-cp310-manylinux2014_x86_64.manylinux_2_17_x86_64.whl'
  'charset_normalizer-3.5.3-cp310-cp310-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl'
  'cryptography-50.0.2-cp39-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl'
  'exceptiongroup-1.3.2-py3-none-any.whl'
  'frozenlist-1.8.0-cp310-cp310-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl'
  'h11-0.16.0-py3-none-any.whl'
  'h2-4.4.1-py3-none-any.whl'
  'hpack-4.2.0-py3-none-any.whl'
  'httpcore-1.0.9-py3-none-any.whl'
  'httpx-0.28.1-py3-none-any.whl'
  'hyperframe-6.1.0-py3-none-any.whl'
  'idna-3.20-py3-none-any.whl'
  'isodate-0.7.2-py3-none-any.whl'
  'jinja2-3.1.6-py3-none-any.whl'
  'markdown_it_py-4.3.0-py3-none-any.whl'
  'markupsafe-3.0.4-cp310-cp310-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl'
  'mdurl-0.1.2-py3-none-any.whl'
  'microsoft_kiota_abstractions-1.16.0-py3-none-any.whl'
  'microsoft_kiota_authentication_azure-1.16.0-py3-none-any.whl'
  'microsoft_kiota_http-1.16.0-py3-none-any.whl'
  'microsoft_kiota_serialization_form-1.16.0-py3-none-any.whl'
  'microsoft_kiota_serialization_json-1.16.0-py3-none-any.whl'
  'microsoft_kiota_serialization_multipart-1.16.0-py3-none-any.whl'
  'microsoft_kiota_serialization_text-1.16.0-py3-none-any.whl'
  'msal-1.39.0-py3-none-any.whl'
  'msal_extensions-1.3.1-py3-none-any.whl'
  'msgraph_core-1.5.2-py3-none-any.whl'
  'msgraph_sdk-1.65.0-py3-none-any.whl'
  'msi_migrator-0.1.0-py3-none-any.whl'
  'multidict-7.1.0-cp310-cp310-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl'
  'opentelemetry_api-1.45.2-py3-none-any.whl'
  'opentelemetry_sdk-1.45.2-py3-none-any.whl'
  'opentelemetry_semantic_conventions-0.66b2-py3-none-any.whl'
  'propcache-0.5.4-cp310-cp310-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl'
  'pycparser-3.11-py3-none-any.whl'
  'pydantic-2.14.4-py3-none-any.whl'
  'pydantic_core-2.50.5-cp310-cp310-manylinux2014_x86_64.manylinux_2_17_x86_64.whl'
  'pygments-2.21.0-py3-none-any.whl'
  'pyjwt-2.15.1-py3-none-any.whl'
  'pyyaml-6.0.4-cp310-cp310-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl'
  'requests-2.34.2-py3-none-any.whl'
  'rich-15.0.0-py3-none-any.whl'
  'shellingham-1.5.4-py2.py3-none-any.whl'
  'std_uritemplate-2.0.12-py3-none-any.whl'
  'structlog-26.1.0-py3-none-any.whl'
  'tenacity-9.2.1-py3-none-any.whl'
  'typer-0.29.1-py3-none-any.whl'
  'typing_extensions-4.16.0-py3-none-any.whl'
  'typing_inspection-0.4.5-py3-none-any.whl'
  'urllib3-2.8.0-py3-none-any.whl'
  'yarl-1.25.1-cp310-cp310-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl'
]

@description('HTTPS URL of runbooks/msi_migrator_runbook.py (without the SAS token).')
param runbookScriptUri string = ''

@description('Read-only SAS token, starting with \'?\', appended to every wheel URL and to runbookScriptUri; empty when they are public. With shared keys off, use a user delegation SAS.')
@secure()
param artifactsSasToken string = ''

@description('Fernet key that encrypts the settings stashed before a swap (they hold the secrets). Stored as the encrypted Automation variable MIGRATOR_STASH_KEY; empty leaves an existing variable alone. Keep a copy: without it a swap cannot be rolled back.')
@secure()
param stashKey string = ''

@description('Daily schedule that runs the runbook in `plan` mode.')
param scheduleName string = 'msi-migrator-daily-plan'

@description('First run (ISO 8601, UTC, at least 5 minutes ahead); it then recurs daily at that time. Default: an hour after deployment.')
param scheduleStartTime string = dateTimeAdd(utcNow('u'), 'PT1H', 'yyyy-MM-ddTHH:mm:ssZ')

@description('Create the job schedule that links schedule and runbook. Automation refuses to re-create an existing link, so pass false when redeploying over one (or delete the link first).')
param linkSchedule bool = true

@description('Scheduled plans are named <planPrefix>-<UTC yyyymmdd>.')
param planPrefix string = 'nightly'

@description('Subscription ids (or names) the scheduled plan scans; empty: every subscription the identity can read. Which subscriptions can be migrated at all is decided by where its ARM roles are granted.')
param subscriptions array = []

var storageBlobDataContributor = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
var storageTableDataContributor = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3')
var blobUrl = 'https://${storageAccountName}.blob.${environment().suffixes.storage}'
var tableUrl = 'https://${storageAccountName}.table.${environment().suffixes.storage}'

// A Python runbook takes positional parameters: Automation passes "[PARAMETER n]" in order as
// sys.argv[n].
var planJobBaseArguments = {
  '[PARAMETER 1]': 'plan'
  '[PARAMETER 2]': '--blob-url'
  '[PARAMETER 3]': blobUrl
  '[PARAMETER 4]': '--table-url'
  '[PARAMETER 5]': tableUrl
  '[PARAMETER 6]': '--container'
  '[PARAMETER 7]': containerName
  '[PARAMETER 8]': '--table'
  '[PARAMETER 9]': tableName
  '[PARAMETER 10]': '--plan-prefix'
  '[PARAMETER 11]': planPrefix
  '[PARAMETER 12]': '--cloud'
  '[PARAMETER 13]': environment().name
}
var planJobArguments = reduce(subscriptions, planJobBaseArguments, (arguments, subscription) => union(arguments, {
  '[PARAMETER ${length(arguments) + 1}]': '--subscription'
  '[PARAMETER ${length(arguments) + 2}]': subscription
}))

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageAccountName
  location: location
  sku: {
    name: storageSku
  }
  kind: 'StorageV2'
  properties: {
    accessTier: 'Hot'
    supportsHttpsTrafficOnly: true
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    isVersioningEnabled: true
    deleteRetentionPolicy: {
      enabled: true
      days: 30
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 30
    }
  }
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {}
}

resource journalTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: tableName
}

resource automation 'Microsoft.Automation/automationAccounts@2023-05-15-preview' = {
  name: automationAccountName
  location: location
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    sku: {
      name: 'Basic'
    }
    publicNetworkAccess: true
    disableLocalAuth: disableLocalAuth
    encryption: {
      keySource: 'Microsoft.Automation'
    }
  }
}

resource stashKeyVariable 'Microsoft.Automation/automationAccounts/variables@2023-05-15-preview' = if (!empty(stashKey)) {
  parent: automation
  name: 'MIGRATOR_STASH_KEY'
  properties: {
    isEncrypted: true
    value: '"${stashKey}"'
    description: 'Fernet key of the runbook\'s stash (settings saved before a swap).'
  }
}

resource runtimeEnvironment 'Microsoft.Automation/automationAccounts/runtimeEnvironments@2023-05-15-preview' = {
  parent: automation
  name: runtimeEnvironmentName
  location: location
  properties: {
    runtime: {
      language: 'Python'
      version: '3.10'
    }
    defaultPackages: {}
    description: 'msi-migrator and its dependencies (runbooks/package.py).'
  }
}

@batchSize(5)
resource runtimePackages 'Microsoft.Automation/automationAccounts/runtimeEnvironments/packages@2023-05-15-preview' = [for wheel in wheels: if (deployRunbook) {
  parent: runtimeEnvironment
  name: first(split(wheel, '-'))
  properties: {
    contentLink: {
      uri: '${packagesBaseUri}${wheel}${artifactsSasToken}'
    }
  }
}]

resource runbook 'Microsoft.Automation/automationAccounts/runbooks@2023-05-15-preview' = if (deployRunbook) {
  parent: automation
  name: runbookName
  location: location
  properties: {
    runbookType: 'Python'
    runtimeEnvironment: runtimeEnvironment.name
    description: 'msi-migrator: `plan` scans and plans; `advance` applies the next approved stage per app.'
    logVerbose: false
    logProgress: false
    publishContentLink: {
      uri: '${runbookScriptUri}${artifactsSasToken}'
    }
  }
}

resource schedule 'Microsoft.Automation/automationAccounts/schedules@2023-05-15-preview' = {
  parent: automation
  name: scheduleName
  properties: {
    description: 'Daily msi-migrator plan (scan, plan, report).'
    startTime: scheduleStartTime
    frequency: 'Day'
    interval: 1
    timeZone: 'UTC'
  }
}

resource blobDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, automation.id, storageBlobDataContributor)
  properties: {
    roleDefinitionId: storageBlobDataContributor
    principalId: automation.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'msi-migrator runbook: plans, reports, approvals, stash, locks'
  }
}

resource tableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, automation.id, storageTableDataContributor)
  properties: {
    roleDefinitionId: storageTableDataContributor
    principalId: automation.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'msi-migrator runbook: the journal'
  }
}

resource planJobSchedule 'Microsoft.Automation/automationAccounts/jobSchedules@2023-05-15-preview' = if (deployRunbook && linkSchedule) {
  parent: automation
  name: guid(automation.id, scheduleName, runbookName)
  properties: {
    schedule: {
      name: schedule.name
    }
    runbook: {
      name: runbook.name
    }
    parameters: planJobArguments
  }
  dependsOn: [
    runtimePackages
    blobDataContributor
    tableDataContributor
  ]
}

@description('Object id of the Automation account\'s identity: grant it the ARM roles on the subscriptions to migrate and the Microsoft Graph app roles (runbooks/README.md). A resource-group deployment cannot.')
output principalId string = automation.identity.principalId
output tenantId string = automation.identity.tenantId
output automationAccountId string = automation.id
output storageAccountName string = storage.name
output blobUrl string = storage.properties.primaryEndpoints.blob
output tableUrl string = storage.properties.primaryEndpoints.table
output containerName string = containerName
output tableName string = tableName
output runbookName string = runbookName
